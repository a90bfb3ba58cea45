"""Locating and driving the reference implementation (NNCodec 2.1.3) in its own venv."""
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(REPO, "tests", "interop", "peer_nncodec.py")


def _candidates():
    env = os.environ.get("NNR_NNCODEC_PYTHON")
    if env:
        yield env
    yield os.path.join(REPO, ".venv-nncodec", "bin", "python")


def _stubs():
    for base in (os.environ.get("NNR_NNCODEC_STUBS"), os.path.join(REPO, "..", "shared", "tools", "nncodec-stubs")):
        if base and os.path.isdir(base):
            return os.path.abspath(base)
    return None


def find_reference():
    """(python, stubs) of an installed reference, or (None, reason)."""
    stubs = _stubs()
    if stubs is None:
        return None, "NNCodec's import stubs (shared/tools/nncodec-stubs) are not beside the repository"
    for py in _candidates():
        if os.path.exists(py):
            ok = subprocess.run([py, "-c", "import nncodec.nnc"], env=dict(os.environ, PYTHONPATH=stubs),
                                capture_output=True, timeout=300)
            if ok.returncode == 0:
                return (py, stubs), None
    return None, ("the reference NNCodec 2.1.3 is not installed: run shared/tools/install-nncodec.sh "
                  ".venv-nncodec (or set NNR_NNCODEC_PYTHON)")


def run_jobs(reference, jobs_dir, timeout=1800):
    py, stubs = reference
    env = dict(os.environ, PYTHONPATH=stubs)
    env.pop("OPENBLAS_CORETYPE", None)
    r = subprocess.run([py, PEER, jobs_dir], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"reference peer failed: {r.stderr[-2000:]}")


def write_job(jobs_dir, job_id, op, tensors=None, bitstream=None, options=None):
    d = os.path.join(jobs_dir, job_id)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "job.json"), "w") as f:
        json.dump({"op": op, "options": options or {}}, f)
    if tensors is not None:
        np.savez(os.path.join(d, "input.npz"), **tensors)
    if bitstream is not None:
        with open(os.path.join(d, "bitstream.nnc"), "wb") as f:
            f.write(bitstream)
    return d


def read_result(job_dir):
    err = os.path.join(job_dir, "error.txt")
    if os.path.exists(err):
        with open(err) as f:
            return "error", f.read()
    bs = os.path.join(job_dir, "bitstream.nnc")
    dec = os.path.join(job_dir, "decoded.npz")
    if os.path.exists(dec):
        with np.load(dec) as z:
            return "decoded", {k: z[k] for k in z.files}
    with open(bs, "rb") as f:
        return "bitstream", f.read()
