"""Builds the suite: manifest entries for the bundled reference vectors (files used as they are),
the streams nnr writes (``cases.py`` -> ``nnr/<name>/``, ``reject/<name>/``) and the manifest.

Deterministic: the same code writes the same bytes. ``check`` rebuilds everything in memory and
compares it with the committed files without writing anything (golden files never rewrite
themselves). ``reference_decodes`` is measured by running the reference decoder over every entry
when it is installed; otherwise (and always for ``check``) the committed values are kept (null for
new entries).
"""
import json
import os
import re
import shutil

import numpy as np

import nnr
from nnr.checksum import tensor_sha256
from nnr.conformance import coverage
from nnr.conformance.manifest import SCHEMA_VERSION, dumps_manifest, error_class, validate_manifest

GENERATED = ("nnr", "reject")
SUITE = "nnr-conformance"
_HLS = {
    "16.1_profile1_fc": ("HLS §16.1 complete stream, general_profile_idc 1", "NNCodec 2.1.3"),
    "16.2_profile0_fc": ("HLS §16.2 the same model with general_profile_idc 0, written by NNCodec 2.x "
                         "(decoder_options profile0_variant nncodec2)", "NNCodec 2.1.3"),
    "16.3_scan1_entrypoints": ("HLS §16.3 block scan (scan order 1) with entry points", "NNCodec 2.1.3"),
    "16.4_block_weight_bias": ("HLS §16.4 NNR_PT_BLOCK weight + bias", "NNCodec 2.1.3"),
    "16.5_incremental_round1": ("HLS §16.5 incremental coding, round 1 (base)", "NNCodec 2.1.3"),
    "16.6_codebook": ("HLS §16.6 codebook header", "NNCodec 2.1.3"),
    "16.7_raw_float_handbuilt": ("HLS §16.7 NNR_PT_RAW_FLOAT", "hand-built"),
    "16.8_mps_perfmap_handbuilt_STR_MPS_only": ("HLS §16.8 MPS with strings, a performance map and validation "
                                                "performance (STR + MPS only)", "hand-built"),
    "16.11_int": ("HLS §16.11 NNR_PT_INT", "NNCodec 2.1.3"),
}


def _decoder(options):
    opts = dict(options or {})
    if "out_of_band" in opts:
        opts["out_of_band"] = {k: tuple(v) for k, v in opts["out_of_band"].items()}
    return nnr.Decoder(**opts)


def _step_record(file, tensors):
    rec = {"file": file, "sha256": {t.name: tensor_sha256(t.values) for t in tensors}}
    f32 = {t.name: tensor_sha256(t.values.astype(np.float32)) for t in tensors if t.values.dtype == np.float64}
    if f32:
        rec["sha256_float32"] = f32
    return rec


def _output_features(all_tensors):
    feats = set()
    for tensors in all_tensors:
        if len(tensors) > 1:
            feats.add("multi_tensor")
        for t in tensors:
            v = t.values
            if t.omitted:
                feats.add("omitted_update")
            elif v.size == 1:
                feats.add("single_element")
            elif not np.any(v):
                feats.add("all_zero")
            elif np.all(v == v.reshape(-1)[0]):
                feats.add("constant")
    return feats


def describe(entry_id, kind, datas, expect, error_cls, description, provenance, tags=(), decoder_options=None,
             files=None):
    """Decode ``datas`` with nnr, check the expectation, and return the manifest entry."""
    dec = _decoder(decoder_options)
    steps, decoded, traces = [], [], []
    from nnr_core.bitstream.trace import Trace
    for k, data in enumerate(datas):
        tr = Trace()
        try:
            tensors = dec.decode_tensors(data, trace=tr)
        except nnr.NNRError as err:
            traces.append((tr.records, err))
            if expect == "reject" and k == len(datas) - 1:
                if not isinstance(err, error_class(error_cls)):
                    raise AssertionError(f"{entry_id}: raised {type(err).__name__}, the case names {error_cls}: {err}")
                steps.append({"file": files[k], "sha256": {}})
                break
            raise AssertionError(f"{entry_id}: step {k} does not decode in nnr: {type(err).__name__}: {err}")
        traces.append((tr.records, None))
        if expect == "reject" and k == len(datas) - 1:
            raise AssertionError(f"{entry_id}: the must-reject stream decodes")
        decoded.append(tensors)
        steps.append(_step_record(files[k], tensors))
    gpis = [r.value for records, _ in traces for r in records if r.path.endswith("general_profile_idc")]
    feats = set(coverage.features_from_traces(traces)) | _output_features(decoded) | set(tags)
    if kind == "sequence":
        feats.add("incremental")
    entry = {"id": entry_id, "kind": kind, "steps": steps, "expect": expect}
    if expect == "reject":
        entry["error_class"] = error_cls
    entry.update(description=description, features=sorted(feats), profile=gpis[0] if gpis else None,
                 provenance=provenance, reference_decodes=None)
    if decoder_options:
        entry["decoder_options"] = decoder_options
    return entry, decoded


# -- the bundled reference vectors -----------------------------------------------------------------
def _ref_arrays(npy, npz):
    if os.path.exists(npz):
        with np.load(npz) as z:
            return {k: z[k] for k in z.files}
    if os.path.exists(npy):
        return {None: np.load(npy)}
    return None


def reference_entries(root):
    entries = []
    for set_name, encoder in (("nncodec-2.1.3", "NNCodec 2.1.3"),
                              ("nncodec-1.x", "NNCodec 1.x (commit 0e3dcd2961701572d253f175754c09952a4b44c7)")):
        base = os.path.join(root, set_name)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            if not os.path.isdir(d):
                continue
            files = sorted(os.listdir(d))
            ks = sorted(int(m.group(1)) for f in files for m in [re.match(r"step(\d+)_bitstream\.nnc$", f)] if m)
            if ks:
                rel = [f"{set_name}/{name}/step{k}_bitstream.nnc" for k in ks]
                refs = [(os.path.join(d, f"step{k}_decoded.npy"), os.path.join(d, f"step{k}_decoded.npz")) for k in ks]
                kind = "sequence"
            elif "bitstream.nnc" in files:
                rel = [f"{set_name}/{name}/bitstream.nnc"]
                refs = [(os.path.join(d, "decoded.npy"), os.path.join(d, "decoded.npz"))]
                kind = "stream"
            else:
                continue
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            desc = cfg.get("description") or name
            if cfg.get("exercises") and cfg["exercises"] != desc:
                desc = f"{desc} ({cfg['exercises']})"
            prov = {"encoder": encoder, "config": {"api": cfg.get("api"), "encoder_args": cfg.get("encoder_args")},
                    "source": f"bitstreams/{set_name}/MANIFEST.md"}
            datas = [open(os.path.join(root, r), "rb").read() for r in rel]
            tags = ["edition:1"] if set_name == "nncodec-1.x" else []
            entry, decoded = describe(f"{set_name}/{name}", kind, datas, "decode", None, desc, prov, tags, None, rel)
            for k, (tensors, (npy, npz)) in enumerate(zip(decoded, refs)):
                want = _ref_arrays(npy, npz)
                got = {t.name: t.values for t in tensors if not t.omitted}
                if want is not None:
                    if list(want) == [None]:
                        want = {next(iter(got)): want[None]}
                    for n, a in want.items():
                        if tensor_sha256(a) != tensor_sha256(got[n]) or a.dtype != got[n].dtype:
                            raise AssertionError(f"{entry['id']} step {k}: nnr's {n} differs from the reference's output")
            entries.append(entry)
    hls = os.path.join(root, "hls-examples")
    if os.path.isdir(hls):
        for stem, (desc, enc) in sorted(_HLS.items()):
            rel = f"hls-examples/{stem}.nnc"
            if not os.path.exists(os.path.join(root, rel)):
                continue
            opts = {"profile0_variant": "nncodec2"} if stem.startswith("16.2") else None
            prov = {"encoder": enc, "config": {}, "source": "bitstreams/hls-examples/PROVENANCE.md"}
            entry, _ = describe(f"hls-examples/{stem}", "stream", [open(os.path.join(root, rel), "rb").read()],
                                "decode", None, desc, prov, (), opts, [rel])
            entries.append(entry)
        seq = ["hls-examples/16.5_incremental_round1.nnc", "hls-examples/16.5_incremental_round2_tca.nnc"]
        if all(os.path.exists(os.path.join(root, r)) for r in seq):
            entry, _ = describe("hls-examples/16.5_incremental", "sequence",
                                [open(os.path.join(root, r), "rb").read() for r in seq], "decode", None,
                                "HLS §16.5 incremental coding: base then a TCA update, one decoder",
                                {"encoder": "NNCodec 2.1.3", "config": {}, "source": "bitstreams/hls-examples/PROVENANCE.md"},
                                (), None, seq)
            entries.append(entry)
    return entries


# -- the streams nnr writes ------------------------------------------------------------------------
def generated_entries():
    """(entries, {relative path: bytes}) of every case in cases.py."""
    from nnr.conformance import cases
    entries, files = [], {}
    for c in cases.CASES:
        datas = cases.built(c.id)
        if c.kind == "stream" and len(datas) != 1:
            raise AssertionError(f"{c.id}: a stream case built {len(datas)} steps")
        rel = [f"{c.id}/stream.nnr"] if c.kind == "stream" else [f"{c.id}/step{k}.nnr" for k in range(len(datas))]
        prov = {"encoder": c.encoder, "config": c.config}
        if c.derived_from:
            prov["derived_from"] = c.derived_from
        entry, _ = describe(c.id, c.kind, datas, c.expect, c.error_class, c.description, prov, c.tags,
                            c.decoder_options or None, rel)
        entries.append(entry)
        files.update(zip(rel, datas))
    return entries, files


def measure_reference(entries, root, files=None):
    """{id: True/False} from running the reference over the entries (None if it is absent)."""
    from nnr.conformance.plugins import NncodecPlugin, find_reference
    from nnr.conformance.runner import PASS, REJECTED, classify
    ref, reason = find_reference()
    if ref is None:
        return None, reason
    plugin = NncodecPlugin(ref)
    outcomes = plugin.run_all(entries, root)
    return {e["id"]: classify(e, o, strict_classes=False).status in (PASS, REJECTED)
            for e, o in zip(entries, outcomes)}, None


def build(root):
    """(manifest without reference results, generated files)."""
    ref = reference_entries(root)
    gen, files = generated_entries()
    manifest = {"suite": SUITE, "version": SCHEMA_VERSION, "entries": ref + gen}
    return manifest, files


def _committed(root):
    path = os.path.join(root, "manifest.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {e["id"]: e.get("reference_decodes") for e in json.load(f).get("entries", [])}


def _apply_reference(manifest, results):
    for e in manifest["entries"]:
        e["reference_decodes"] = results.get(e["id"])


def generate(root, reference=True, log=print):
    """Write the generated streams and the manifest under ``root`` (the bitstreams/ folder)."""
    manifest, files = build(root)
    results = None
    if reference:
        # the reference reads the streams from disk: write them first
        _write_files(root, files)
        results, reason = measure_reference(manifest["entries"], root)
        if results is None:
            log(f"reference decoder not run ({reason}): reference_decodes left null")
    if results is None:
        results = _committed(root) if not reference else {}
    _apply_reference(manifest, results)
    problems = validate_manifest(manifest)
    if problems:
        raise AssertionError("generated manifest is invalid: " + "; ".join(problems[:10]))
    _write_files(root, files)
    with open(os.path.join(root, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(dumps_manifest(manifest))
    return manifest


def _write_files(root, files):
    for top in GENERATED:
        d = os.path.join(root, top)
        if os.path.isdir(d):
            shutil.rmtree(d)
    for rel, data in sorted(files.items()):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def check(root):
    """Differences between the committed suite and a fresh generation ([] when identical).
    Writes nothing; reference_decodes values are taken from the committed manifest."""
    manifest, files = build(root)
    _apply_reference(manifest, _committed(root))
    diffs = []
    on_disk = set()
    for top in GENERATED:
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for n in names:
                on_disk.add(os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, "/"))
    for rel in sorted(set(files) | on_disk):
        if rel not in on_disk:
            diffs.append(f"missing: {rel}")
        elif rel not in files:
            diffs.append(f"not generated (stale): {rel}")
        else:
            with open(os.path.join(root, rel), "rb") as f:
                if f.read() != files[rel]:
                    diffs.append(f"differs: {rel}")
    path = os.path.join(root, "manifest.json")
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if text != dumps_manifest(manifest):
        old = {e["id"]: e for e in json.loads(text)["entries"]} if text else {}
        new = {e["id"]: e for e in manifest["entries"]}
        changed = [i for i in new if old.get(i) != new[i]] + [f"{i} (removed)" for i in old if i not in new]
        diffs.append("manifest.json differs: " + (", ".join(changed[:10]) or "formatting"))
    return diffs
