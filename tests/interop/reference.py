"""Locating and driving the reference implementation (NNCodec 2.1.3) in its own venv."""
import json
import os
import subprocess
import sys

import numpy as np

from nnr.testenv.nncodec import find_reference, peer_env  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(REPO, "tests", "interop", "peer_nncodec.py")


def run_jobs(reference, jobs_dir, timeout=1800):
    py, _ = reference
    env = peer_env()
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


def run_interop(jobs, make_case, n_cases, reference_options):
    """Encode each case with nnr and have the reference (one process per round) encode it, decode
    nnr's bitstream, then decode its own.  Returns {seed: (tensors, opts, nnr bitstream)}; the
    reference's results are read with read_result(jobs / f"{seed:03d}-ref-<encode|decodes-nnr|
    decodes-ref>")."""
    import nnr
    cases = {}
    for seed in range(n_cases):
        tensors, opts = make_case(seed)
        nnr_bs = nnr.encode(tensors, **opts)
        cases[seed] = (tensors, opts, nnr_bs)
        write_job(str(jobs), f"{seed:03d}-ref-encode", "encode", tensors=tensors, options=reference_options(opts))
        write_job(str(jobs), f"{seed:03d}-ref-decodes-nnr", "decode", bitstream=nnr_bs)
    run_jobs(_reference(), str(jobs))
    for seed in cases:                       # second round: the reference decodes its own bitstreams
        kind, ref_bs = read_result(os.path.join(str(jobs), f"{seed:03d}-ref-encode"))
        if kind == "bitstream":
            write_job(str(jobs), f"{seed:03d}-ref-decodes-ref", "decode", bitstream=ref_bs)
    run_jobs(_reference(), str(jobs))
    return cases


def reference_decodes(streams: dict, jobs_dir) -> dict:
    """{name: ("decoded", tensors) or ("error", text)}: the reference decodes each bitstream."""
    for name, data in streams.items():
        write_job(str(jobs_dir), name, "decode", bitstream=data)
    run_jobs(_reference(), str(jobs_dir))
    return {name: read_result(os.path.join(str(jobs_dir), name)) for name in streams}


def _reference():
    ref, why = find_reference()
    if ref is None:
        raise RuntimeError(f"interop: {why}")
    return ref


def assert_same_tensors(a: dict, b: dict):
    """Same names in the same order, same shapes, values equal exactly."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k].astype(np.float64), b[k].astype(np.float64)), k
