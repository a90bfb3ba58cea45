"""Benchmark peer run under the reference's own venv (NNCodec 2.1.3): one encode or decode job.

Usage: python peer_nncodec.py JOB_DIR (see _peer_common.py). Imports nncodec, never nnr."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peer_common as common  # noqa: E402


def _options(o):
    return dict(qp=o["qp"], qp_density=o["qp_density"], nonweight_qp=o["nonweight_qp"], use_dq=o["dq"],
                codebook_mode=0, scan_order=o["scan_order"], row_skipping=o["row_skipping"],
                param_opt=o["param_opt"], cabac_unary_length_minus1=o["cabac_unary_length_minus1"])


def encode(job_dir, job):
    from nncodec import nnc
    with np.load(os.path.join(job_dir, "input.npz")) as z:
        tensors = {k: z[k] for k in z.files}
    opts = _options(job["options"])
    bs, times = common.timed(lambda: bytes(nnc.compress(tensors, bitstream_path=None, return_bitstream=True,
                                                        verbose=False, **opts)), job["repeats"])
    return dict(common.write_bitstream(job_dir, bs), times=times)


def decode(job_dir, job):
    from nncodec import nnc
    data = common.read_bitstream(job_dir)
    _, times = common.timed(lambda: nnc.decompress(bytearray(data), verbose=False), job["repeats"])
    return {"times": times}


if __name__ == "__main__":
    common.run(sys.argv[1], encode, decode)
