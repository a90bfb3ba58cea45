"""Local scaling adaptation (issue 15 item 2): task metric against bits with and without LSA.

    python -m benchmarks.lsa [--models fmnist,effnet] [--qps fmnist:-10,-12,...] [--markdown FILE]

For each model and QP (the reference's defaults otherwise, DQ on): the plain stream, and
nnr.rd.encode_lsa's stream (the same levels plus one factor per output channel at step 2^-12, trained
after quantization with the default loss, the mean squared difference from the float network's
outputs), decoded with lsa=True; and the plain curve's metric interpolated at the LSA stream's size
(equal bits). LSA training data are disjoint from the evaluation data: Fashion-MNIST: 5,000 training
images (batches of 100, two passes, lr 1e-2) and the 10,000 test images; EfficientNet-Lite0: the
benchmark's 180 calibration views of 6 photos (shuffled batches of 12, three passes, lr 3e-4) and its
450 evaluation views of 15 other photos.
"""
import argparse
import time

import numpy as np

DEFAULT_QPS = {"fmnist": (-10, -12, -14, -16, -18, -20, -22), "effnet": (-30, -32, -34, -36)}


def _training_batches(name, spec):
    import torch
    if name == "fmnist":
        from benchmarks.rd.models import fmnist
        xtr, _, _, _ = fmnist.data()
        cal = set(np.random.default_rng([0, 2]).permutation(len(xtr))[:fmnist.CALIBRATION_IMAGES].tolist())
        idx = [i for i in np.random.default_rng(5).permutation(len(xtr)) if i not in cal][:5000]
        return [torch.from_numpy(xtr[idx[i:i + 100]]) for i in range(0, 5000, 100)], dict(epochs=2, lr=1e-2)
    x = torch.cat(spec.calibration)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        perm = torch.randperm(len(x), generator=g)
        batches += [x[perm[i:i + 12]] for i in range(0, len(x), 12)]
    return batches, dict(epochs=1, lr=3e-4)


def _at(bits, curve):
    """The plain curve's metric interpolated at `bits` (None outside it)."""
    pts = sorted(curve)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs[0] <= bits <= xs[-1]:
        return None
    return float(np.interp(bits, xs, ys))


def run(name, qps, log=print):
    import nnr
    from benchmarks.rd.models import effnet, fmnist
    from nnr.rd.lsa import encode_lsa
    spec = {"fmnist": fmnist, "effnet": effnet}[name].load()
    n = sum(v.size for v in spec.tensors.values())
    batches, train = _training_batches(name, spec)
    rows = []
    for qp in qps:
        plain = nnr.encode(spec.tensors, qp=qp)
        t0 = time.perf_counter()
        lsa = encode_lsa(spec.module, spec.tensors, batches, qp=qp, **train)
        seconds = time.perf_counter() - t0
        row = dict(qp=qp, plain_bpp=8 * len(plain) / n, plain_metric=spec.metric(nnr.decode(plain)),
                   lsa_bpp=8 * len(lsa) / n, lsa_metric=spec.metric(nnr.decode(lsa, lsa=True)), seconds=seconds)
        rows.append(row)
        log(f"{name} qp {qp}: plain {row['plain_bpp']:.3f} bpp {row['plain_metric']:.4f} | LSA {row['lsa_bpp']:.3f} "
            f"bpp {row['lsa_metric']:.4f} ({seconds:.0f} s)")
    curve = [(r["plain_bpp"], r["plain_metric"]) for r in rows]
    for r in rows:
        r["plain_at_lsa_bpp"] = _at(r["lsa_bpp"], curve)
    return spec, rows


def markdown(spec, rows) -> str:
    out = [f"**{spec.title}** ({spec.metric_name}; {spec.data_note})", "",
           "| qp | plain bits/param | plain | LSA bits/param | LSA | plain at LSA's bits | LSA − plain at equal bits |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        eq = r["plain_at_lsa_bpp"]
        at = "" if eq is None else f"{eq:.4f}"
        gain = "" if eq is None else f"{r['lsa_metric'] - eq:+.4f}"
        out.append(f"| {r['qp']} | {r['plain_bpp']:.3f} | {r['plain_metric']:.4f} | {r['lsa_bpp']:.3f} | "
                   f"{r['lsa_metric']:.4f} | {at} | {gain} |")
    return "\n".join(out)


def cli(argv, prog, doc, default_qps, run_model, table):
    """The command line both comparison benchmarks share: --models, --qps MODEL:QP,QP, --markdown."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    p.add_argument("--models", default=",".join(default_qps))
    p.add_argument("--qps", action="append", default=[], metavar="MODEL:QP,QP",
                   help="QPs of a model (defaults: " + "; ".join(f"{m}: {','.join(map(str, q))}"
                                                          for m, q in default_qps.items()) + ")")
    p.add_argument("--markdown", metavar="FILE")
    args = p.parse_args(argv)
    qps = dict(default_qps)
    for item in args.qps:
        model, _, values = item.partition(":")
        qps[model] = tuple(int(v) for v in values.split(","))
    parts = []
    for name in args.models.split(","):
        spec, rows = run_model(name, qps[name])
        parts.append(table(spec, rows))
        print(parts[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n\n".join(parts) + "\n")
    return 0


def main(argv=None):
    return cli(argv, "python -m benchmarks.lsa", __doc__, DEFAULT_QPS, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
