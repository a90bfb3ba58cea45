"""Run under the reference's own venv (NNCodec 2.1.3): executes a batch of encode/decode jobs.

Usage: python peer_nncodec.py JOBS_DIR. Each job is JOBS_DIR/<id>/job.json with
{"op": "encode", "options": {...}} (reads input.npz, writes bitstream.nnc) or
{"op": "decode"} (reads bitstream.nnc, writes decoded.npz); failures write error.txt.
This file is a test peer: it imports nncodec, never nnr.
"""
import json
import os
import sys
import traceback

import numpy as np


def encode(job_dir, options):
    from nncodec import nnc
    with np.load(os.path.join(job_dir, "input.npz")) as z:
        tensors = {k: z[k] for k in z.files}
    bs = nnc.compress(tensors, bitstream_path=None, return_bitstream=True, verbose=False, **options)
    with open(os.path.join(job_dir, "bitstream.nnc"), "wb") as f:
        f.write(bytes(bs))


def decode(job_dir):
    from nncodec import nnc
    with open(os.path.join(job_dir, "bitstream.nnc"), "rb") as f:
        bs = bytearray(f.read())
    out = nnc.decompress(bs, verbose=False)
    np.savez(os.path.join(job_dir, "decoded.npz"), **{k: np.asarray(v) for k, v in out.items()})


def main(jobs_dir):
    for job_id in sorted(os.listdir(jobs_dir)):
        job_dir = os.path.join(jobs_dir, job_id)
        with open(os.path.join(job_dir, "job.json")) as f:
            job = json.load(f)
        try:
            if job["op"] == "encode":
                encode(job_dir, job["options"])
            else:
                decode(job_dir)
        except BaseException:          # the reference reports bad input with SystemExit/asserts
            with open(os.path.join(job_dir, "error.txt"), "w") as f:
                f.write(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1])
