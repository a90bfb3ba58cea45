"""Benchmark peer for nnr: one encode, decode or bin-count job (see _peer_common.py).

Usage: python -m benchmarks.peer_nnr JOB_DIR."""
import os
import sys

import numpy as np

from benchmarks import _peer_common as common


def _options(o):
    return dict(qp=o["qp"], qp_density=o["qp_density"], nonweight_qp=o["nonweight_qp"], dq=o["dq"],
                scan_order=o["scan_order"], row_skipping=o["row_skipping"], param_opt=o["param_opt"],
                cabac_unary_length_minus1=o["cabac_unary_length_minus1"])


def _jobs(job):
    return {"jobs": job["jobs"]} if job.get("jobs") else {}


def encode(job_dir, job):
    import nnr
    path = os.path.join(job_dir, "input.npz")
    opts = dict(_options(job["options"]), **_jobs(job))
    with np.load(path) as z:
        tensors = {k: z[k] for k in z.files}
    data, times = common.timed(lambda: nnr.encode(tensors, **opts), job["repeats"])
    return dict(common.write_bitstream(job_dir, data), times=times)


def decode(job_dir, job):
    import nnr
    data = common.read_bitstream(job_dir)
    opts = _jobs(job)
    _, times = common.timed(lambda: nnr.decode(data, **opts), job["repeats"])
    result = {"times": times}
    return result


def count_bins(job_dir, job):
    """Regular (context-coded) bins of the bitstream: the encoder counts the bins it codes, which
    are exactly the bins the decoder reads (an extra encode, not timed)."""
    import nnr
    from nnr_core.cabac import _encoder
    with np.load(os.path.join(job_dir, "input.npz")) as z:
        tensors = {k: z[k] for k in z.files}
    before = _encoder.regular_bins_coded()
    nnr.encode(tensors, **_options(job["options"]), jobs=1)
    return {"regular_bins": _encoder.regular_bins_coded() - before}


def _dispatch(job_dir, job):
    return count_bins(job_dir, job) if job["mode"] == "bins" else decode(job_dir, job)


if __name__ == "__main__":
    common.run(sys.argv[1], encode, _dispatch)
