"""Side-by-side benchmark of nnr and the reference NNCodec 2.1.3 (issue 5; README.md beside this file).

    python -m benchmarks [--full] [--repeats 3] [--only SUBSTRING] [--no-reference] [--json FILE]

Every measurement runs in its own process (nnr: ``benchmarks/peer_nnr.py``, the reference:
``benchmarks/peer_nncodec.py`` in its own venv), on the same input files, and reports the median of
`--repeats` runs and the process's peak RSS. Without the reference its columns say "n/a" and a
note says why.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "benchmarks")

BASE_OPTIONS = dict(qp=-32, qp_density=2, nonweight_qp=-75, dq=True, scan_order=0, row_skipping=True,
                    param_opt=True, cabac_unary_length_minus1=10)

M1, M8, M64 = (1024, 1024), (2048, 4096), (8192, 8192)


def _case(dist, shape, qp=-32, dq=True, scan=0, full=False, enc_jobs2=False):
    return dict(dist=dist, shape=shape, qp=qp, dq=dq, scan=scan, full=full, enc_jobs2=enc_jobs2)


# The default set: 1 M and 8 M parameters plus a model; --full adds 64 M. The first case is the
# issue's 4.8 bits/parameter tensor, the second its 9.2 bits/parameter one.
CASES = [
    _case("gauss0.05", M1), _case("gauss1", M1),
    _case("gauss0.05", M1, qp=-24), _case("gauss0.05", M1, qp=-40), _case("gauss0.05", M1, dq=False),
    _case("gauss0.05", M1, scan=2), _case("laplace0.05", M1), _case("laplace0.05", M1, dq=False, scan=2),
    _case("gauss0.05", M8), _case("gauss1", M8), _case("gauss0.05", M8, scan=2),
    _case("gauss0.05", M8, dq=False), _case("laplace0.05", M8, qp=-40),
    _case("model", None, enc_jobs2=True),
    _case("gauss0.05", M64, full=True), _case("gauss0.05", M64, scan=2, full=True),
    _case("laplace0.05", M64, qp=-24, dq=False, full=True), _case("model64", None, full=True, enc_jobs2=True),
]

# A multi-tensor model (transformer-like layers: weights and biases), 8.4 M / 67 M parameters.
MODEL_LAYERS = {"model": (8, 1024, 1024), "model64": (16, 2048, 2048)}


def case_name(c):
    shape = "x".join(map(str, c["shape"])) if c["shape"] else f"{MODEL_LAYERS[c['dist']][0]} layers"
    return f"{c['dist']} {shape} qp{c['qp']} {'dq' if c['dq'] else 'nodq'} scan{c['scan']}"


def make_input(c, path):
    """The case's tensors (float32, a fixed seed per distribution) written to `path` (.npz)."""
    rng = np.random.default_rng(5)
    dist = c["dist"]

    def draw(shape, scale=0.05, kind="gauss"):
        if kind == "laplace":
            return rng.laplace(0.0, scale / np.sqrt(2.0), size=shape).astype(np.float32)
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    if dist in MODEL_LAYERS:
        layers, rows, width = MODEL_LAYERS[dist]
        tensors = {}
        for i in range(layers):
            tensors[f"layer{i}.weight"] = draw((rows, width), 0.05)
            tensors[f"layer{i}.bias"] = draw((rows,), 0.01)
    else:
        kind, scale = ("laplace", float(dist[7:])) if dist.startswith("laplace") else ("gauss", float(dist[5:]))
        tensors = {"w": draw(c["shape"], scale, kind)}
    np.savez(path, **tensors)
    return sum(a.size for a in tensors.values())


# ---------------------------------------------------------------------------------------------
# Peers


def _env():
    env = dict(os.environ)
    # OpenBLAS's core-type override slows a current numpy; neither peer depends on it (machine notes)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def find_reference():
    """((python, stubs), None) of the reference, or (None, reason) (nnr.testenv.nncodec)."""
    from nnr.testenv.nncodec import find_reference as find
    return find()


def reference_or_note(skip, prefix):
    """(reference, None), or (None, a note saying why the reference is not run)."""
    if skip:
        return None, f"{prefix}: --no-reference"
    reference, reason = find_reference()
    return reference, None if reference is not None else f"{prefix}: {reason}"


def run_peer(job_dir, mode, options, repeats, jobs=None, reference=None, timeout=7200, extra=None,
             script=None):
    """Run one job in a fresh process; returns the result dict (or {"error": ...}). extra: more job
    fields; script: another reference peer (default: peer_nncodec.py beside this file)."""
    job = {"mode": mode, "options": options, "repeats": repeats, **(extra or {})}
    if jobs:
        job["jobs"] = jobs
    with open(os.path.join(job_dir, "job.json"), "w") as f:
        json.dump(job, f)
    env = _env()
    if reference is None:
        cmd = [sys.executable, "-m", "benchmarks.peer_nnr", job_dir]
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    else:
        py, stubs = reference
        cmd = [py, script or os.path.join(HERE, "peer_nncodec.py"), job_dir]
        env["PYTHONPATH"] = stubs
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    try:
        with open(os.path.join(job_dir, "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = {"error": f"peer exited {r.returncode}: {r.stderr[-2000:]}"}
    os.remove(os.path.join(job_dir, "result.json")) if os.path.exists(os.path.join(job_dir, "result.json")) else None
    return result


def _job_dir(root, name, input_path):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    target = os.path.join(d, "input.npz")
    if not os.path.exists(target):
        os.link(input_path, target)
    return d


def measure(c, root, repeats, reference, log):
    """All measurements of one case: nnr (1 and 2 jobs) and the reference, each in its own process."""
    n = make_input(c, os.path.join(root, "input.npz"))
    opts = dict(BASE_OPTIONS, qp=c["qp"], dq=c["dq"], scan_order=c["scan"])
    res = {"case": case_name(c), "dist": c["dist"], "shape": c["shape"], "params": n, "options": opts}

    def med(r):
        return statistics.median(r["times"]) if r and "times" in r else None

    d = _job_dir(root, "nnr", os.path.join(root, "input.npz"))
    log(f"  nnr encode (1 job) x{repeats}")
    enc = run_peer(d, "encode", opts, repeats, jobs=1)
    res["nnr_encode"] = enc
    if c["enc_jobs2"]:
        log(f"  nnr encode (2 jobs) x{repeats}")
        res["nnr_encode_j2"] = run_peer(_job_dir(root, "nnr-j2", os.path.join(root, "input.npz")),
                                        "encode", opts, repeats, jobs=2)
    if "error" not in enc:
        for jobs in (1, 2):
            log(f"  nnr decode ({jobs} job{'s' if jobs > 1 else ''}) x{repeats}")
            res[f"nnr_decode_j{jobs}"] = run_peer(d, "decode", opts, repeats, jobs=jobs)
        res["nnr_bins"] = run_peer(d, "bins", opts, 1)
    if reference is not None:
        rd = _job_dir(root, "ref", os.path.join(root, "input.npz"))
        log(f"  reference encode x{repeats}")
        renc = run_peer(rd, "encode", opts, repeats, reference=reference)
        res["ref_encode"] = renc
        if "error" not in renc:
            log(f"  reference decode x{repeats}")
            res["ref_decode"] = run_peer(rd, "decode", opts, repeats, reference=reference)
    for key in list(res):
        if isinstance(res[key], dict) and "times" in res[key]:
            res[key]["median_s"] = med(res[key])
            res[key]["mparams_per_s"] = n / med(res[key]) / 1e6
    for d_ in ("nnr", "nnr-j2", "ref"):
        shutil.rmtree(os.path.join(root, d_), ignore_errors=True)
    os.remove(os.path.join(root, "input.npz"))
    return res


# ---------------------------------------------------------------------------------------------
# Report


def _get(r, key, field):
    v = r.get(key)
    return None if not v or "error" in v else v.get(field)


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def _ratio(a, b):
    return None if a is None or b is None else a / b


def table(results):
    head = ("| case | params | bits/param nnr | bits/param ref | same bytes | encode M/s nnr (1 job) "
            "| encode M/s nnr (2 jobs) | encode M/s ref | encode ratio (1 job) | decode M/s nnr (1 job) "
            "| decode M/s nnr (2 jobs) | decode M/s ref | decode ratio (1 job) | decode ratio (2 jobs) "
            "| ns/regular bin nnr | regular bins/param | peak RSS encode nnr / ref (MB) "
            "| peak RSS decode nnr / ref (MB) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        n = r["params"]
        bnnr = _get(r, "nnr_encode", "bytes")
        bref = _get(r, "ref_encode", "bytes")
        same = None
        if bnnr is not None and bref is not None:
            same = "yes" if _get(r, "nnr_encode", "sha256") == _get(r, "ref_encode", "sha256") else "NO"
        enc1, enc2 = _get(r, "nnr_encode", "mparams_per_s"), _get(r, "nnr_encode_j2", "mparams_per_s")
        encr = _get(r, "ref_encode", "mparams_per_s")
        dec1, dec2 = _get(r, "nnr_decode_j1", "mparams_per_s"), _get(r, "nnr_decode_j2", "mparams_per_s")
        decr = _get(r, "ref_decode", "mparams_per_s")
        bins = _get(r, "nnr_bins", "regular_bins")
        dsec = _get(r, "nnr_decode_j1", "median_s")
        ns_bin = dsec * 1e9 / bins if bins and dsec else None
        lines.append("| " + " | ".join([
            r["case"], f"{n / 1e6:.1f} M",
            _fmt(bnnr * 8 / n if bnnr else None, ".3f"), _fmt(bref * 8 / n if bref else None, ".3f"),
            same or "n/a", _fmt(enc1), _fmt(enc2), _fmt(encr), _fmt(_ratio(enc1, encr), ".1f"),
            _fmt(dec1), _fmt(dec2), _fmt(decr), _fmt(_ratio(dec1, decr), ".1f"), _fmt(_ratio(dec2, decr), ".1f"),
            _fmt(ns_bin, ".1f"), _fmt(bins / n if bins else None, ".2f"),
            f"{_fmt(_get(r, 'nnr_encode', 'peak_rss_mb'), '.0f')} / {_fmt(_get(r, 'ref_encode', 'peak_rss_mb'), '.0f')}",
            f"{_fmt(_get(r, 'nnr_decode_j1', 'peak_rss_mb'), '.0f')} / {_fmt(_get(r, 'ref_decode', 'peak_rss_mb'), '.0f')}",
        ]) + " |")
    return "\n".join(lines)


def errors(results):
    out = []
    for r in results:
        for k, v in r.items():
            if isinstance(v, dict) and "error" in v:
                out.append(f"{r['case']}: {k}: {v['error'].strip().splitlines()[-1]}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="also the 64 M-parameter inputs")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is reported)")
    p.add_argument("--only", action="append", help="run only cases whose name contains this (repeatable)")
    p.add_argument("--no-reference", action="store_true", help="do not run the reference")
    p.add_argument("--json", default=os.path.join(HERE, "results.json"), help="where to write the results")
    p.add_argument("--workdir", help="directory for inputs and bitstreams (default: a temporary one)")
    args = p.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    reference, note = reference_or_note(args.no_reference, "reference columns skipped")
    if note:
        log(f"NOTE: {note}")
    cases = [c for c in CASES if args.full or not c["full"]]
    if args.only:
        cases = [c for c in cases if any(o in case_name(c) for o in args.only)]
    root = args.workdir or tempfile.mkdtemp(prefix="nnr-bench-")
    os.makedirs(root, exist_ok=True)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = []
    try:
        for c in cases:
            log(f"{case_name(c)}")
            results.append(measure(c, root, args.repeats, reference, log))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    meta = {"started": started, "load_before": load_before, "load_after": os.getloadavg(),
            "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
            "repeats": args.repeats, "reference": None if reference is None else reference[0], "note": note}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(table(results))
    if note:
        print(f"\nNOTE: {note}")
    for e in errors(results):
        print(f"ERROR: {e}")
    print(f"\nload average before {load_before[0]:.2f}, after {meta['load_after'][0]:.2f}; "
          f"median of {args.repeats} runs; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
