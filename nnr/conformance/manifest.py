"""The conformance manifest (``<suite>/manifest.json``): load, validate, write.

Schema (version 1; paths relative to the manifest's folder)::

    {"suite": "...", "version": 1, "entries": [ENTRY, ...]}
    ENTRY = {"id": "nnr/dq_scan2_rowskip", "kind": "stream" | "sequence",
             "steps": [{"file": "...", "sha256": {"<tensor name>": "<hex>", ...}}, ...],
             "expect": "decode" | "reject", "error_class": "TruncatedBitstreamError",
             "description": "...", "features": ["profile:1", ...], "profile": 1,
             "provenance": {"encoder": "...", "config": {...}, "derived_from": "<id>"},
             "reference_decodes": true | false | null,
             "decoder_options": {"profile0_variant": "nncodec2"}}      # optional

A "stream" has one step; a "sequence" is decoded step by step by one decoder. For "reject" the
last step must raise ``error_class`` (or a subclass); earlier steps must decode to their checksums.
"""
import json
import os
import re

import nnr.errors as errors

SCHEMA_VERSION = 1
KINDS = ("stream", "sequence")
EXPECTS = ("decode", "reject")
DECODER_OPTIONS = ("profile0_variant", "codebook_dtype", "out_of_band")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")


class ManifestError(ValueError):
    """The manifest does not follow the schema (a bug in the suite, not in a decoder)."""


def error_class(name):
    """The nnr error class called ``name`` (None if nnr has no such class)."""
    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, errors.NNRError) else None


def validate_manifest(manifest, root=None):
    """Return the list of problems (empty when valid). With ``root``, step files must exist."""
    problems = []
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    if manifest.get("version") != SCHEMA_VERSION:
        problems.append(f"version must be {SCHEMA_VERSION}, not {manifest.get('version')!r}")
    if not isinstance(manifest.get("suite"), str):
        problems.append("suite must be a string")
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        return problems + ["entries must be a list"]
    seen = set()
    for n, e in enumerate(entries):
        where = f"entries[{n}]"
        if not isinstance(e, dict):
            problems.append(f"{where}: not an object")
            continue
        eid = e.get("id")
        where = f"entry {eid!r}"
        if not isinstance(eid, str) or not _ID.match(eid):
            problems.append(f"{where}: id must be a path-like string")
        elif eid in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(eid)
        if e.get("kind") not in KINDS:
            problems.append(f"{where}: kind must be one of {KINDS}")
        steps = e.get("steps")
        if not isinstance(steps, list) or not steps:
            problems.append(f"{where}: steps must be a non-empty list")
            steps = []
        if e.get("kind") == "stream" and len(steps) != 1:
            problems.append(f"{where}: a stream has exactly one step")
        for k, s in enumerate(steps):
            if not isinstance(s, dict) or not isinstance(s.get("file"), str):
                problems.append(f"{where}: steps[{k}] needs a file")
                continue
            if os.path.isabs(s["file"]) or ".." in s["file"].split("/"):
                problems.append(f"{where}: steps[{k}].file must be relative inside the suite")
            elif root is not None and not os.path.isfile(os.path.join(root, s["file"])):
                problems.append(f"{where}: steps[{k}].file {s['file']} does not exist")
            sha = s.get("sha256")
            last_reject = e.get("expect") == "reject" and k == len(steps) - 1
            if sha is None and last_reject:
                continue
            if not isinstance(sha, dict) or not all(isinstance(v, str) and _HEX.match(v) for v in sha.values()):
                problems.append(f"{where}: steps[{k}].sha256 must map tensor names to 64 hex digits")
        if e.get("expect") not in EXPECTS:
            problems.append(f"{where}: expect must be one of {EXPECTS}")
        elif e["expect"] == "reject":
            if not isinstance(e.get("error_class"), str) or error_class(e["error_class"]) is None:
                problems.append(f"{where}: a reject entry needs error_class naming an nnr error class")
        elif e.get("error_class") is not None:
            problems.append(f"{where}: error_class only goes with expect 'reject'")
        if not isinstance(e.get("description"), str) or not e["description"]:
            problems.append(f"{where}: description must be a non-empty string")
        feats = e.get("features")
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            problems.append(f"{where}: features must be a list of strings")
        if e.get("profile") not in (0, 1, None):
            problems.append(f"{where}: profile must be 0, 1 or null")
        prov = e.get("provenance")
        if not isinstance(prov, dict) or not isinstance(prov.get("encoder"), str):
            problems.append(f"{where}: provenance.encoder must be a string")
        elif prov["encoder"] == "derived" and not prov.get("derived_from"):
            problems.append(f"{where}: a derived entry names derived_from")
        if e.get("reference_decodes") not in (True, False, None):
            problems.append(f"{where}: reference_decodes must be true, false or null")
        opts = e.get("decoder_options", {})
        if not isinstance(opts, dict) or set(opts) - set(DECODER_OPTIONS):
            problems.append(f"{where}: decoder_options may hold only {DECODER_OPTIONS}")
    return problems


def load_manifest(path):
    """Load and validate ``path`` (a manifest.json or the folder holding one).
    Returns (manifest, root folder); raises ManifestError listing every problem."""
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except OSError as err:
        raise ManifestError(f"cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not JSON: {err}") from None
    root = os.path.dirname(os.path.abspath(path))
    problems = validate_manifest(manifest, root)
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems[:20]) +
                            (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
    return manifest, root


def dumps_manifest(manifest):
    """The canonical text of a manifest (stable across runs: generate --check compares it)."""
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"


def write_manifest(path, manifest):
    problems = validate_manifest(manifest, os.path.dirname(os.path.abspath(path)))
    if problems:
        raise ManifestError("refusing to write an invalid manifest: " + "; ".join(problems[:20]))
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps_manifest(manifest))
