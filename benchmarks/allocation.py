"""The cost of a rate budget: nnr.encode(target_bpp=...) against one plain encode (issue 13: at
most 4x on a 22 M-parameter model), and how close the stream comes to the budget.

    python -m benchmarks.allocation [--jobs 1] [--repeats 3] [--bpp 2,3,4] [--markdown FILE]

The model is synthetic with the shapes of a 6-layer, 384-wide transformer with a 30,522-token
embedding (22.6 M parameters, the size class of the issue's model); importance is drawn from a
heavy-tailed distribution with a scale per tensor, as squared gradients are. Every encode runs in
this process, the plain one first (warm caches), median of --repeats.
"""
import argparse
import os
import platform
import statistics
import time

import numpy as np


def transformer(seed=0):
    """(tensors, importance) with the shapes of a small BERT-style encoder."""
    rng = np.random.default_rng(seed)
    t = {"embeddings.word.weight": rng.normal(0, 0.05, (30522, 384)),
         "embeddings.position.weight": rng.normal(0, 0.02, (512, 384))}
    shapes = {"q": (384, 384), "k": (384, 384), "v": (384, 384), "o": (384, 384), "ffn1": (1536, 384),
              "ffn2": (384, 1536)}
    for layer in range(6):
        for name, shape in shapes.items():
            t[f"layer{layer}.{name}.weight"] = rng.normal(0, 0.04, shape)
            t[f"layer{layer}.{name}.bias"] = rng.normal(0, 0.01, shape[0])
        t[f"layer{layer}.norm.weight"] = 1 + rng.normal(0, 0.05, 384)
    tensors = {k: v.astype(np.float32) for k, v in t.items()}
    importance = {k: (rng.gamma(0.5, size=v.shape) * 10.0 ** rng.uniform(-2, 2)).astype(np.float32)
                  for k, v in tensors.items()}
    return tensors, importance


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv=None):
    import nnr
    ap = argparse.ArgumentParser(prog="python -m benchmarks.allocation", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=0, help="encoder threads (0: all cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bpp", default="2,3,4", help="budgets in bits per parameter, comma-separated")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)
    tensors, importance = transformer()
    params = sum(v.size for v in tensors.values())
    nnr.encode({"warm": tensors["layer0.q.weight"]}, jobs=args.jobs)
    plain, t_plain = timed(lambda: nnr.encode(tensors, jobs=args.jobs), args.repeats)
    rows = [("plain encode (qp -32)", 8 * len(plain) / params, "", t_plain, 1.0)]
    for bpp in (float(b) for b in args.bpp.split(",")):
        budget = int(bpp * params / 8)
        for label, extra in (("target_bpp", {}), ("target_bpp + importance", {"importance": importance})):
            data, t = timed(lambda: nnr.encode(tensors, jobs=args.jobs, target_bpp=bpp, **extra), args.repeats)
            rows.append((f"{label} {bpp:g}", 8 * len(data) / params, f"{100 * (budget - len(data)) / budget:.3f}",
                         t, t / t_plain))
    lines = [f"{params / 1e6:.1f} M parameters, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
             f"jobs {args.jobs or 'all'}, median of {args.repeats}",
             "", "| encode | bits/param | % under budget | seconds | x plain |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.4f} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
