"""RD benchmark peer run under the reference's own venv (NNCodec 2.1.3): a QP sweep, or decoding.

Usage: python peer_nncodec.py JOB_DIR. job.json: {"mode": "encode", "qps": [...], "options": {...}}
with input.npz: one nnc.compress per QP, written to qp<QP>.nnc, result {"points": [{"qp", "bytes",
"sha256", "seconds"}]}; or {"mode": "decode", "files": [...]}: nnc.decompress of each, the tensors
written to <file>.npz. Imports nncodec, never nnr (benchmarks/_peer_common.py does the rest)."""
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _peer_common as common  # noqa: E402
from peer_nncodec import _options  # noqa: E402  (the option mapping of `python -m benchmarks`)


def sweep(job_dir, job):
    from nncodec import nnc
    with np.load(os.path.join(job_dir, "input.npz")) as z:
        tensors = {k: z[k] for k in z.files}
    points = []
    for qp in job["qps"]:
        opts = _options(dict(job["options"], qp=int(qp)))
        bs, times = common.timed(lambda: bytes(nnc.compress(tensors, bitstream_path=None, return_bitstream=True,
                                                            verbose=False, **opts)), 1)
        with open(os.path.join(job_dir, f"qp{qp}.nnc"), "wb") as f:
            f.write(bs)
        points.append({"qp": int(qp), "bytes": len(bs), "sha256": hashlib.sha256(bs).hexdigest(), "seconds": times[0]})
    return {"points": points}


def decode(job_dir, job):
    from nncodec import nnc
    for name in job["files"]:
        with open(os.path.join(job_dir, name), "rb") as f:
            data = f.read()
        out = nnc.decompress(bytearray(data), verbose=False)
        np.savez(os.path.join(job_dir, name + ".npz"), **{k: np.asarray(v) for k, v in out.items()})
    return {"decoded": list(job["files"])}


if __name__ == "__main__":
    common.run(sys.argv[1], sweep, decode)
