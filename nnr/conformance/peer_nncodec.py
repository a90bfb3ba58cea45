"""Runs under the reference's own venv (numpy + NNCodec 2.1.3 only; never imports nnr).

Usage: python peer_nncodec.py JOBS_DIR [TIMEOUT_PER_JOB]. Each JOBS_DIR/<n>/ holds job.json
({"steps": K, "kind": "stream" | "sequence"}) and step0.nnc .. step{K-1}.nnc. A sequence's steps
are decoded in order by one decoder state (approx_param_base, update_base_param=True,
HdspTool(True), return_hls=True), as an incremental decoder keeps it; a stream is decoded by
``nnc.decompress(bitstream)`` alone (NNCodec's incremental path needs node identification and
fails on edition-1 streams). Writes step{k}_decoded.npz per decoded step, or step{k}_error.json
({"class", "message"}) for the step that failed.
"""
import json
import os
import signal
import sys
import traceback

import numpy as np


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("the reference did not finish in time")


def run_job(job_dir, timeout):
    from nncodec import nnc
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    base = {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}
    tool = HdspTool(True)
    for k in range(job["steps"]):
        with open(os.path.join(job_dir, f"step{k}.nnc"), "rb") as f:
            bs = bytearray(f.read())
        signal.alarm(timeout)
        try:
            if job.get("kind") == "sequence":
                out, _ = nnc.decompress(bs, verbose=False, approx_param_base=base, update_base_param=True,
                                        hdsp_tool=tool, return_hls=True)
            else:
                out = nnc.decompress(bs, verbose=False)
            arrays = {str(n): np.asarray(v) for n, v in out.items()}
        except BaseException as err:       # the reference reports bad input with asserts/SystemExit
            signal.alarm(0)
            with open(os.path.join(job_dir, f"step{k}_error.json"), "w") as f:
                json.dump({"class": type(err).__name__, "message": f"{type(err).__name__}: {err}\n"
                           + traceback.format_exc()[-3000:]}, f)
            return
        signal.alarm(0)
        np.savez(os.path.join(job_dir, f"step{k}_decoded.npz"), **arrays)


def main(jobs_dir, timeout=60):
    signal.signal(signal.SIGALRM, _alarm)
    for name in sorted(os.listdir(jobs_dir)):
        d = os.path.join(jobs_dir, name)
        if os.path.isfile(os.path.join(d, "job.json")):
            run_job(d, timeout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60)
