"""What both peers share: the job directory layout and the measurements (no codec imports here).

A job directory holds job.json ({"mode": "encode" | "decode", "options": {...}, "repeats": R,
"jobs": J}), input.npz (encode) or bitstream.nnc (decode). The peer writes result.json:
{"times": [seconds per run], "peak_rss_mb": ..., "bytes": ..., "sha256": ...} and, for encode,
bitstream.nnc; on failure {"error": "..."}."""
import hashlib
import json
import os
import resource
import time
import traceback


def peak_rss_mb():
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_job(job_dir):
    with open(os.path.join(job_dir, "job.json")) as f:
        return json.load(f)


def timed(fn, repeats):
    """Run fn() `repeats` times; (last result, [seconds each])."""
    times, out = [], None
    for _ in range(repeats):
        out = None                       # let the previous result go before the next run
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def write_result(job_dir, result):
    with open(os.path.join(job_dir, "result.json"), "w") as f:
        json.dump(result, f)


def run(job_dir, encode, decode):
    """Dispatch one job to encode(job_dir, job) / decode(job_dir, job), which return a result dict."""
    try:
        job = load_job(job_dir)
        result = encode(job_dir, job) if job["mode"] == "encode" else decode(job_dir, job)
        result["peak_rss_mb"] = peak_rss_mb()
    except BaseException:                # the reference reports bad input with SystemExit/asserts
        result = {"error": traceback.format_exc()[-3000:]}
    write_result(job_dir, result)


def write_bitstream(job_dir, data):
    with open(os.path.join(job_dir, "bitstream.nnc"), "wb") as f:
        f.write(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_bitstream(job_dir):
    with open(os.path.join(job_dir, "bitstream.nnc"), "rb") as f:
        return f.read()
