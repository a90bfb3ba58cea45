"""nnr_rd: rate-distortion report of a model over a QP range, DQ on and off."""
import math
import os
import sys

from nnr.cli.common import EXIT_USAGE, ToolError, cannot_write, check_output, parser, preload, run
from nnr.errors import NNRError


def build_parser():
    p = parser("nnr_rd", (
        "Encode a model over a range of QPs (DQ on and off), decode it, and report bits per parameter "
        "against weight PSNR/SNR and, with --metric, a task metric. PSNR uses each tensor's max |w| as peak."))
    p.add_argument("model", help="model file (.pt/.pth, .safetensors, .npz, .h5)")
    p.add_argument("--qp", default="-20:-44:4", help="QP range start:stop[:step] (stop included) or a comma list "
                   "(default -20:-44:4)")
    p.add_argument("--dq", choices=("both", "on", "off"), default="both", help="dependent quantization (default both)")
    p.add_argument("--metric", help="task metric 'module:function' taking {name: ndarray} and returning a float")
    p.add_argument("--metric-name", default=None, help="column title of the metric (default: the function name)")
    p.add_argument("--qp-density", type=int, default=2)
    p.add_argument("--nonweight-qp", type=int, default=-75)
    p.add_argument("--lambda-scale", type=float, default=0.0)
    p.add_argument("--scan-order", type=int, default=0)
    p.add_argument("--framework", choices=("generic", "pytorch"), default="generic")
    p.add_argument("--target-psnr", type=float, help="also: per-tensor QP search for this weight PSNR (dB)")
    p.add_argument("--target-bpp", type=float, help="also: QPs meeting this size (bits per parameter)")
    p.add_argument("--per-tensor", action="store_true", help="--target-bpp by equal-slope allocation per tensor")
    p.add_argument("-o", "--output", default=None, help="output prefix (default: the model's name + '_rd'); "
                   "writes PREFIX.md, PREFIX.csv, PREFIX_tensors.csv and PREFIX.png")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled PyTorch checkpoints")
    p.add_argument("--allow-external", action="store_true", help="read HDF5 datasets stored in other files")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return p


def _join_negative_values(argv):
    """'--qp -20:-44:4' -> '--qp=-20:-44:4': argparse takes a value starting with '-' for an option."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--qp", "--nonweight-qp") and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_join_negative_values(argv))
    return run("nnr_rd", _report, args, subject=args.model)


def _report(args):
    from nnr.cli.common import model_format
    from nnr.cli.files import check_input
    from nnr.fileio import atomic_output
    from nnr.modelio import load_model
    from nnr.rd import search, sweep as sw
    try:
        qps = sw.parse_qp_range(args.qp)
    except NNRError as err:
        raise ToolError(f"--qp: {err}", EXIT_USAGE) from None
    fmt = model_format(args.model, None, onnx=False, flag=None)
    check_input(args.model, fmt)
    preload(fmt)
    prefix = args.output or os.path.splitext(os.path.basename(args.model))[0] + "_rd"
    outputs = [prefix + ".md", prefix + ".csv", prefix + "_tensors.csv"] + ([] if args.no_plot else [prefix + ".png"])
    for path in outputs:
        check_output(path)
    model = load_model(args.model, fmt=fmt, allow_pickle=args.allow_pickle, allow_float64=True,
                       allow_external=args.allow_external)
    tensors = sw.codable_tensors(model.tensors)
    dqs = {"both": (True, False), "on": (True,), "off": (False,)}[args.dq]
    opts = dict(qp_density=args.qp_density, nonweight_qp=args.nonweight_qp, lambda_scale=args.lambda_scale,
                scan_order=args.scan_order, framework=args.framework)
    metric_name = None
    if args.metric:
        sw.load_metric(args.metric)          # fail before the first encode
        metric_name = args.metric_name or args.metric.rpartition(":")[2]
    points = sw.sweep(tensors, qps, dqs, metric=args.metric,
                      progress=lambda p: print(f"  {p.label}: {p.bits_per_param:.3f} bits/param, "
                                               f"PSNR {p.psnr:.2f} dB", file=sys.stderr), **opts)
    extra_md = []
    for target, kind in ((args.target_psnr, "psnr"), (args.target_bpp, "bpp")):
        if target is None:
            continue
        for dq in dqs:
            o = dict(opts, dq=dq)
            if kind == "psnr":
                qpt = search.search_target_psnr(tensors, target, **o)
            else:
                qpt = search.search_target_bpp(tensors, target, per_tensor=args.per_tensor, **o)
            import nnr
            data = nnr.encode(tensors, qp_per_tensor=qpt, **o)
            pt = sw.measure(tensors, data, metric=sw.load_metric(args.metric) if args.metric else None,
                            qp=min(qpt.values()) if qpt else 0, dq=dq, tensor_qps=qpt,
                            label=f"target {kind} {target} {'DQ' if dq else 'URQ'}")
            worst = min((t.psnr for n, t in pt.tensors.items() if n in qpt), default=math.inf)
            extra_md.append((pt, worst, qpt))
            points.append(pt)
    md = sw.table_markdown(points, metric_name)
    for pt, worst, qpt in extra_md:
        md += (f"\n{pt.label}: {pt.bits_per_param:.4f} bits/param, model PSNR {pt.psnr:.2f} dB, "
               f"lowest per-tensor PSNR {worst:.2f} dB, QPs {min(qpt.values())}..{max(qpt.values())}\n")
    print(sw.table_text(points, metric_name))
    written = []
    for path, text in zip(outputs, (md, sw.table_csv(points, metric_name), sw.table_csv(points, per_tensor=True))):
        try:
            with atomic_output(path, "w") as f:
                f.write(text)
        except OSError as err:
            raise cannot_write(path, err) from None
        written.append(path)
    if not args.no_plot:
        from nnr.rd.plot import PlotUnavailableError, plot_rd
        try:
            written.append(plot_rd([p for p in points if p.label.startswith("qp ")], prefix + ".png", metric_name,
                                   title=os.path.basename(args.model)))
        except PlotUnavailableError as err:
            print(f"nnr_rd: no plot: {err}", file=sys.stderr)
    print("wrote " + ", ".join(written), file=sys.stderr)
    return 0
