"""Run under the reference's own venv (NNCodec 2.1.3): executes a batch of encode/decode jobs.

Usage: python peer_nncodec.py JOBS_DIR. Each job is JOBS_DIR/<id>/job.json with
{"op": "encode", "options": {...}} (reads input.npz, writes bitstream.nnc),
{"op": "decode", "options": {...}} (reads bitstream.nnc, writes decoded.npz; options go to decompress),
{"op": "encode_model", "options": {...}} (reads model.pt, a torch.save'd module, writes bitstream.nnc
with compress_model),
{"op": "encode_steps", "options": {...}, "steps": K, "tca": b, "hdsp": b} (reads stepK_input.npz,
writes stepK_bitstream.nnc: incremental coding with one encoder state) or
{"op": "decode_steps", "steps": K, "hdsp": b} (reads stepK_bitstream.nnc, writes stepK_decoded.npz);
failures write error.txt.
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


def encode_model(job_dir, options):
    import torch
    from nncodec import nnc
    model = torch.load(os.path.join(job_dir, "model.pt"), weights_only=False)
    bs = nnc.compress_model(model, bitstream_path=None, return_bitstream=True, verbose=False, **options)
    with open(os.path.join(job_dir, "bitstream.nnc"), "wb") as f:
        f.write(bytes(bs))


def decode(job_dir, options):
    from nncodec import nnc
    with open(os.path.join(job_dir, "bitstream.nnc"), "rb") as f:
        bs = bytearray(f.read())
    out = nnc.decompress(bs, verbose=False, **options)
    np.savez(os.path.join(job_dir, "decoded.npz"), **{k: np.asarray(v) for k, v in out.items()})


def _base():
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


def encode_steps(job_dir, job):
    from nncodec import nnc
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool
    base, tool = _base(), HdspTool(bool(job.get("hdsp")))
    for k in range(job["steps"]):
        with np.load(os.path.join(job_dir, f"step{k}_input.npz")) as z:
            tensors = {n: z[n] for n in z.files}
        bs = nnc.compress(tensors, bitstream_path=None, return_bitstream=True, verbose=False,
                          approx_param_base=base, update_base_param=True, compress_differences=True,
                          tca=bool(job.get("tca")), hdsp_tool=tool, **job["options"])
        with open(os.path.join(job_dir, f"step{k}_bitstream.nnc"), "wb") as f:
            f.write(bytes(bs))


def decode_steps(job_dir, job):
    from nncodec import nnc
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool
    base, tool = _base(), HdspTool(bool(job.get("hdsp")))
    for k in range(job["steps"]):
        with open(os.path.join(job_dir, f"step{k}_bitstream.nnc"), "rb") as f:
            bs = bytearray(f.read())
        out, _ = nnc.decompress(bs, verbose=False, approx_param_base=base, update_base_param=True,
                                hdsp_tool=tool, return_hls=True)
        np.savez(os.path.join(job_dir, f"step{k}_decoded.npz"), **{n: np.asarray(v) for n, v in out.items()})


def main(jobs_dir):
    for job_id in sorted(os.listdir(jobs_dir)):
        job_dir = os.path.join(jobs_dir, job_id)
        with open(os.path.join(job_dir, "job.json")) as f:
            job = json.load(f)
        try:
            if job["op"] == "encode":
                encode(job_dir, job["options"])
            elif job["op"] == "encode_model":
                encode_model(job_dir, job["options"])
            elif job["op"] == "encode_steps":
                encode_steps(job_dir, job)
            elif job["op"] == "decode_steps":
                decode_steps(job_dir, job)
            else:
                decode(job_dir, job.get("options") or {})
        except BaseException:          # the reference reports bad input with SystemExit/asserts
            with open(os.path.join(job_dir, "error.txt"), "w") as f:
                f.write(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1])
