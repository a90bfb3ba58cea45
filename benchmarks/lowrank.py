"""Low-rank decomposition with a rate-distortion rank choice (issue 15 item 3): task metric against
bits, plain and with nnr.rd.encode_low_rank.

    python -m benchmarks.lowrank [--models fmnist,effnet] [--qps MODEL:QP,QP] [--markdown FILE]

For each model and QP (the reference's other defaults, DQ on): the plain stream, and the stream where
every weight whose rank-r factors (r a power of two, factors at the weight's QP or up to 6 steps finer)
code smaller with no more squared error is decomposed; the plain curve's metric interpolated at the
decomposed stream's size (equal bits). No data are used for the choice (weight squared error only);
the metrics are the RD benchmark's (Fashion-MNIST: the 10,000 test images; EfficientNet-Lite0: top-1
agreement with the float model on 450 views of 15 photos).
"""
import time


from benchmarks.lsa import _at, cli

DEFAULT_QPS = {"fmnist": (-12, -14, -16, -18, -20, -22, -26), "effnet": (-30, -32, -34, -36)}


def run(name, qps, log=print):
    import nnr
    from benchmarks.rd.models import effnet, fmnist
    from nnr.rd.lowrank import choose_ranks
    spec = {"fmnist": fmnist, "effnet": effnet}[name].load()
    n = sum(v.size for v in spec.tensors.values())
    rows = []
    for qp in qps:
        plain = nnr.encode(spec.tensors, qp=qp)
        t0 = time.perf_counter()
        chosen = choose_ranks(spec.tensors, qp=qp)
        qps_gh = {f"{k}{s}": q for k, (_, q) in chosen.items() for s in ("_G", "_H")}
        lrd = nnr.encode(spec.tensors, qp=qp, low_rank={k: r for k, (r, _) in chosen.items()} or None,
                         qp_per_tensor=qps_gh or None)
        seconds = time.perf_counter() - t0
        row = dict(qp=qp, plain_bpp=8 * len(plain) / n, plain_metric=spec.metric(nnr.decode(plain)),
                   lrd_bpp=8 * len(lrd) / n, lrd_metric=spec.metric(nnr.decode(lrd)), seconds=seconds,
                   chosen={k: list(v) for k, v in chosen.items()})
        rows.append(row)
        log(f"{name} qp {qp}: plain {row['plain_bpp']:.3f} bpp {row['plain_metric']:.4f} | low rank "
            f"{row['lrd_bpp']:.3f} bpp {row['lrd_metric']:.4f}, {len(chosen)} weight(s) {chosen} ({seconds:.0f} s)")
    curve = [(r["plain_bpp"], r["plain_metric"]) for r in rows]
    for r in rows:
        r["plain_at_lrd_bpp"] = _at(r["lrd_bpp"], curve)
    return spec, rows


def markdown(spec, rows) -> str:
    out = [f"**{spec.title}** ({spec.metric_name})", "",
           "| qp | plain bits/param | plain | low-rank bits/param | low rank | decomposed (rank) | plain at equal bits |",
           "|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        at = "" if r["plain_at_lrd_bpp"] is None else f"{r['plain_at_lrd_bpp']:.4f}"
        which = ", ".join(f"`{k}` ({v[0]})" for k, v in r["chosen"].items()) or "none"
        out.append(f"| {r['qp']} | {r['plain_bpp']:.3f} | {r['plain_metric']:.4f} | {r['lrd_bpp']:.3f} | "
                   f"{r['lrd_metric']:.4f} | {which} | {at} |")
    return "\n".join(out)


def main(argv=None):
    return cli(argv, "python -m benchmarks.lowrank", __doc__, DEFAULT_QPS, run, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
