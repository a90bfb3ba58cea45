"""Decoder plugins: how the runner hands a manifest entry's steps to a decoder.

Every plugin turns one entry into a list of ``StepOutcome`` (one per step it ran, stopping at the
first failure): the SHA-256 of each decoded tensor (``nnr.checksum.tensor_sha256``), or the error
it raised, or a reason it could not run the entry at all (``Skip``).

* ``nnr``: nnr's decoder in-process (one ``nnr.Decoder`` per entry, the entry's
  ``decoder_options`` honoured);
* ``nnr_decode``: the ``nnr_decode`` CLI in a subprocess, reading the .npz it writes (streams only:
  the CLI starts a fresh decoder for every file, so sequences are skipped);
* ``nncodec``: the reference NNCodec 2.1.3 in its own venv, driven by ``peer_nncodec.py`` (one
  batch for the whole suite);
* any other string: a command template with ``{input}`` and ``{output}`` (an .npz to write), e.g.
  ``"mydec {input} --out {output}"``; a non-zero exit status is a failure to decode.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from nnr.checksum import tensor_sha256
from nnr.testenv.nncodec import find_reference  # noqa: F401  (the one way to find the reference)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PEER = os.path.join(HERE, "peer_nncodec.py")
_ERRCLASS = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:Error|Exception|Exit))\b")


@dataclass
class StepOutcome:
    sha256: Optional[dict] = None        # name -> hex, when the step decoded
    error_class: Optional[str] = None    # the class name, when it raised
    error_mro: tuple = ()                # class names of the exception and its bases (in-process)
    message: str = ""
    notes: list = field(default_factory=list)


class Skip(Exception):
    """The plugin cannot run this entry (a reason, not a failure)."""


def _shas(tensors):
    return {name: tensor_sha256(a) for name, a in tensors.items()}


def _decoder_kwargs(entry):
    opts = dict(entry.get("decoder_options", {}))
    if "codebook_dtype" in opts:
        opts["codebook_dtype"] = np.dtype(opts["codebook_dtype"])
    if "out_of_band" in opts:
        opts["out_of_band"] = {k: tuple(v) for k, v in opts["out_of_band"].items()}
    return opts


def _read(root, step):
    with open(os.path.join(root, step["file"]), "rb") as f:
        return f.read()


class NnrPlugin:
    """nnr's decoder, in this process."""

    name = "nnr"
    description = f"nnr {__import__('nnr').__version__} (in-process)"

    def run_all(self, entries, root, progress=None):
        return [self._run(e, root) for e in entries]

    def _run(self, entry, root):
        import nnr
        try:
            dec = nnr.Decoder(**_decoder_kwargs(entry))
        except (TypeError, ValueError) as err:
            return Skip(f"decoder_options not accepted: {err}")
        out = []
        for step in entry["steps"]:
            data = _read(root, step)
            try:
                # the members the standard fixes bit-exactly: a low-rank pair as G and H (HLS §9.4)
                tensors = dec.decode(data, recompose=False)
            except Exception as err:          # classified by the runner; nnr raises NNRError only
                out.append(StepOutcome(error_class=type(err).__name__,
                                       error_mro=tuple(c.__name__ for c in type(err).__mro__),
                                       message=str(err)))
                break
            out.append(StepOutcome(sha256=_shas(tensors)))
        return out


def _npz_shas(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: tensor_sha256(z[k]) for k in z.files}


class CommandPlugin:
    """Any decoder behind a command template with {input} and {output} (an .npz it writes)."""

    name = "cmd"

    def __init__(self, template, timeout=120):
        if "{input}" not in template or "{output}" not in template:
            raise ValueError("a decoder command needs {input} and {output}")
        self.template = template
        self.timeout = timeout
        self.description = f"command: {template}"

    def argv(self, entry, input_path, output_path):
        return [a.replace("{input}", input_path).replace("{output}", output_path)
                for a in shlex.split(self.template)]

    def run_all(self, entries, root, progress=None):
        return [self._run(e, root) for e in entries]

    def _run(self, entry, root):
        if entry["kind"] == "sequence":
            return Skip("a command decodes one file per process: sequences need one decoder across steps")
        if set(entry.get("decoder_options", {})) - self.supported_options():
            return Skip(f"decoder_options {sorted(entry['decoder_options'])} cannot be passed to the command")
        step = entry["steps"][0]
        with tempfile.TemporaryDirectory(prefix="nnr-conf-") as tmp:
            out_path = os.path.join(tmp, "decoded.npz")
            argv = self.argv(entry, os.path.join(root, step["file"]), out_path)
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return [StepOutcome(error_class="Timeout", message=f"no answer in {self.timeout} s")]
            except OSError as err:
                return [StepOutcome(error_class="CommandError", message=f"cannot run {argv[0]}: {err}")]
            if r.returncode != 0 or not os.path.exists(out_path):
                return [self._failure(r)]
            return [StepOutcome(sha256=_npz_shas(out_path))]

    def supported_options(self):
        return set()

    @staticmethod
    def _failure(r):
        text = (r.stderr or "") + (r.stdout or "")
        m = _ERRCLASS.findall(text)
        return StepOutcome(error_class=m[-1] if m else f"exit status {r.returncode}",
                           message=text.strip()[-500:])


class NnrDecodePlugin(CommandPlugin):
    """The nnr_decode CLI in a subprocess (``python -m nnr.cli.nnr_decode``)."""

    name = "nnr_decode"

    def __init__(self, timeout=120):
        super().__init__("nnr_decode {input} -o {output} -q", timeout)
        self.description = "nnr_decode (CLI subprocess)"

    def supported_options(self):
        return {"profile0_variant"}

    def argv(self, entry, input_path, output_path):
        argv = [sys.executable, "-m", "nnr.cli.nnr_decode", input_path, "-o", output_path, "-q", "--no-recompose"]
        variant = entry.get("decoder_options", {}).get("profile0_variant")
        if variant:
            argv += ["--profile0-variant", variant]
        return argv

    @staticmethod
    def _failure(r):
        m = re.search(r"^nnr_decode: .*?: (\w+): ", r.stderr or "", re.M)
        if m:
            return StepOutcome(error_class=m.group(1), message=r.stderr.strip()[-500:])
        return CommandPlugin._failure(r)


# -- the reference ---------------------------------------------------------------------------
class NncodecPlugin:
    """The reference decoder (NNCodec 2.1.3) in its own venv: one peer process for all entries.

    NNCodec does not output tensors an update leaves out (all-zero updates, HLS §13.5),
    where nnr outputs zero tensors: a tensor missing from the reference's output is checked to be
    a zero tensor in the manifest instead (its shape and dtype taken from the reference's output
    of an earlier step). NNCodec's errors are its own (asserts, RuntimeError, SystemExit): for a
    reject entry any failure counts, the error class is not compared.
    """

    name = "nncodec"
    description = "NNCodec 2.1.3 (reference, own venv)"

    def __init__(self, reference=None, timeout_per_job=60):
        if reference is None:
            reference, reason = find_reference()
            if reference is None:
                raise RuntimeError(reason)
        self.reference = reference
        self.timeout_per_job = timeout_per_job

    def run_all(self, entries, root, progress=None):
        results = [None] * len(entries)
        with tempfile.TemporaryDirectory(prefix="nnr-conf-ref-") as jobs:
            todo = []
            for n, e in enumerate(entries):
                d = os.path.join(jobs, f"{n:05d}")
                os.makedirs(d)
                for k, step in enumerate(e["steps"]):
                    shutil.copyfile(os.path.join(root, step["file"]), os.path.join(d, f"step{k}.nnc"))
                with open(os.path.join(d, "job.json"), "w") as f:
                    json.dump({"steps": len(e["steps"]), "kind": e["kind"], "id": e["id"]}, f)
                todo.append((n, d))
            py, stubs = self.reference
            env = dict(os.environ, PYTHONPATH=stubs)
            env.pop("OPENBLAS_CORETYPE", None)
            r = subprocess.run([py, PEER, jobs, str(self.timeout_per_job)], env=env, capture_output=True,
                               text=True, timeout=self.timeout_per_job * len(entries) + 600)
            if r.returncode != 0:
                raise RuntimeError(f"reference peer failed: {r.stderr[-2000:]}")
            for n, d in todo:
                results[n] = self._collect(entries[n], d)
        return results

    @staticmethod
    def _collect(entry, d):
        out, shapes = [], {}
        for k, step in enumerate(entry["steps"]):
            err = os.path.join(d, f"step{k}_error.json")
            if os.path.exists(err):
                with open(err) as f:
                    e = json.load(f)
                out.append(StepOutcome(error_class=e["class"], message=e["message"][:500]))
                break
            path = os.path.join(d, f"step{k}_decoded.npz")
            if not os.path.exists(path):
                out.append(StepOutcome(error_class="NotRun", message="the peer did not reach this step"))
                break
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            shas, notes = _shas(arrays), []
            for name, a in arrays.items():
                shapes[name] = (a.shape, a.dtype)
            for name in (step.get("sha256") or {}):
                if name not in shas and name in shapes:
                    shape, dtype = shapes[name]
                    shas[name] = tensor_sha256(np.zeros(shape, dtype))
                    notes.append(f"{name}: left out by the update; checked as a zero tensor")
            out.append(StepOutcome(sha256=shas, notes=notes))
        return out


BUILTIN = {"nnr": NnrPlugin, "nnr_decode": NnrDecodePlugin, "nncodec": NncodecPlugin}


def get_plugin(spec):
    """'nnr', 'nnr_decode', 'nncodec' or a command template with {input} and {output}."""
    if spec in BUILTIN:
        return BUILTIN[spec]()
    return CommandPlugin(spec)
