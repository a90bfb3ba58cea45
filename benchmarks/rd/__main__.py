"""Rate-distortion at equal task quality: the reference's QP sweep and nnr's modes on real models.

    python -m benchmarks.rd [--models fmnist,crepe,effnet] [--quick] [--json FILE] [--markdown FILE]
                            [--plots DIR] [--no-reference] [--jobs 2]

For each model (benchmarks/rd/models/): the reference NNCodec 2.1.3 (`nnc.compress`, DQ, in its own
venv, found as `python -m benchmarks` finds it) at every QP of the sweep, and every nnr mode
(benchmarks/rd/modes.py); every stream decoded by nnr.decode and scored with the model's task
metric; bits per parameter = stream bytes * 8 / floating-point parameters coded. --quick: Fashion-MNIST
only, 3 points per curve, a small evaluation subset (what the test runs). See benchmarks/README.md.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

from benchmarks.__main__ import reference_or_note
from benchmarks.rd import report
from benchmarks.rd.models import DEFAULT, LOADERS
from benchmarks.rd.run import run_model, summarise

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.rd", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help=f"comma-separated, of {','.join(LOADERS)} (default: "
                                                  f"{','.join(DEFAULT)}; --quick: fmnist)")
    p.add_argument("--quick", action="store_true", help="3 points per curve, small evaluation subsets, fmnist only")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write the Markdown section here (else it is printed)")
    p.add_argument("--plots", help="write one PNG per model into this folder")
    p.add_argument("--no-reference", action="store_true", help="do not run the reference")
    p.add_argument("--jobs", type=int, default=2, help="threads for torch and the codec (default 2)")
    p.add_argument("--sparsity", type=float, default=0.3, help="sparsity of the unstructured mode (default 0.3)")
    p.add_argument("--row-sparsity", type=float, default=0.1, help="share of rows zeroed by the row mode (default 0.1)")
    p.add_argument("--modes", default=None, help="comma-separated mode keys to run (default: all; nnr's default, "
                   "whose sizes are the budgets, always runs)")
    p.add_argument("--from-json", help="measure nothing: write the Markdown (and --plots) of earlier --json results")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        return write_report(saved["meta"], saved["models"], args)
    if args.modes:
        from benchmarks.rd.modes import BY_KEY
        args.modes = args.modes.split(",")
        bad = [m for m in args.modes if m not in BY_KEY]
        if bad:
            p.error(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(BY_KEY)}")
    names = (args.models or ("fmnist" if args.quick else ",".join(DEFAULT))).split(",")
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(LOADERS)}")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import torch
    torch.set_num_threads(max(1, args.jobs))
    reference, note = reference_or_note(args.no_reference, "reference not run")
    if note:
        log(f"NOTE: {note}")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    results = []
    meta = {"started": started, "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__, "jobs": args.jobs,
            "quick": args.quick, "sparsity": args.sparsity, "row_sparsity": args.row_sparsity,
            "load_before": os.getloadavg(), "reference": None if reference is None else reference[0], "note": note}
    with tempfile.TemporaryDirectory(prefix="nnr-rd-") as workdir:
        for name in names:
            spec = LOADERS[name](args.quick, log)
            results.append(run_model(spec, reference, args, workdir, log))
            meta.update(seconds=time.perf_counter() - t0, load_after=os.getloadavg())
            if args.json:                   # after every model, so a long run keeps what it measured
                _write_json(args.json, {"meta": meta, "models": results})
    return write_report(meta, results, args)


def _write_json(path, obj):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_report(meta, results, args):
    """The plots (--plots) and the Markdown (--markdown, else printed)."""
    md = []
    for r in results:
        r["summary"] = summarise(r, r["higher_is_better"])     # from the points (earlier --json results too)
        plot = None
        if args.plots:
            plot = os.path.join(args.plots, f"rd_{r['name']}.png")
            report.plot(r, plot)
            if args.markdown:
                plot = os.path.relpath(plot, os.path.dirname(os.path.abspath(args.markdown)))
        md.append(report.model_section(r, plot))
    note = meta.get("note")
    md.insert(0, "Bits at equal metric at the reference's qp -30 and -36 points (details per model below):\n\n"
              + report.overview(results) + "\n")
    text = "\n".join(md) + f"\nTotal {meta['seconds']:.0f} s, started {meta['started']}"
    text += (f"; {note}" if note else "") + ".\n"
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
