"""nnr_encode: compress a model file (.pt/.pth, .safetensors, .npz, .h5, .onnx) into an NNC bitstream."""
import argparse
import sys
import time

import numpy as np

from nnr.errors import NNRError


def build_parser():
    p = argparse.ArgumentParser(prog="nnr_encode", description=__doc__)
    p.add_argument("input", help="model file: .pt/.pth (state_dict or checkpoint), .safetensors, .npz, .h5, "
                                 ".onnx (graph and weights; needs the onnx package)")
    p.add_argument("-o", "--output", required=True, help="output NNC bitstream")
    p.add_argument("--format", help="input format if the extension does not say (pt, safetensors, npz, h5, onnx)")
    p.add_argument("--qp", type=int, default=-32, help="QP of weight tensors (default -32)")
    p.add_argument("--qp-density", type=int, default=2, help="qp_density 0..7 (default 2)")
    p.add_argument("--nonweight-qp", type=int, default=-75, help="QP of 1-D / non-weight tensors (default -75)")
    p.add_argument("--no-dq", action="store_true", help="uniform quantization without dependent quantization")
    p.add_argument("--codebook", action="store_true", help="codebook quantization where it is smaller")
    p.add_argument("--bitdepth", type=int, help="integer-aligned bit depth (QP derived per tensor)")
    p.add_argument("--scan-order", type=int, default=0, help="0 row-major, 1..4 block scans with entry points")
    p.add_argument("--no-row-skipping", action="store_true")
    p.add_argument("--no-param-opt", action="store_true", help="do not optimise context parameter sets")
    p.add_argument("--cabac-unary-length-minus1", type=int, default=10)
    p.add_argument("--profile", type=int, default=1, choices=[0, 1], help="general_profile_idc (default 1)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading whole pickled PyTorch modules")
    p.add_argument("--lossless", action="store_true",
                   help="float tensors as NNR_PT_RAW_FLOAT (uncompressed): float32/float16 weights decode "
                        "bit-identically (for .onnx input: the whole model)")
    p.add_argument("--trace", metavar="FILE", help="write the syntax trace of the written bitstream")
    p.add_argument("-j", "--jobs", type=int, default=0,
                   help="worker threads coding tensors concurrently (default 0: all cores)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    # ONNX input (nnr/topology): the graph in the NNR_TPL unit, the weights in NDUs.
    from nnr.topology.cli import encode_onnx_file, is_onnx_path
    if is_onnx_path(args.input, args.format):
        return encode_onnx_file(args, _encoder_options(args, "generic"))
    import nnr
    from nnr import filemeta
    from nnr.fileio import atomic_output
    from nnr.modelio import load_model
    from nnr.progress import Progress, format_bytes

    try:
        # safetensors are memory-mapped: tensors are read as they are coded (a model larger than RAM)
        model = load_model(args.input, fmt=args.format, allow_pickle=args.allow_pickle, allow_float64=True,
                           mmap=True)
    except OSError as err:
        print(f"nnr_encode: cannot read {args.input}: {err.strerror or err}", file=sys.stderr)
        return 2
    except NNRError as err:
        print(f"nnr_encode: {args.input}: {err}", file=sys.stderr)
        return 1
    framework = "pytorch" if model.fmt == "pt" else "generic"
    coded, skipped = {}, {}
    for name, a in model.tensors.items():
        if framework == "pytorch" and ".num_batches_tracked" in name:
            skipped[name] = a          # the reference's PyTorch path does not code these
        elif a.ndim == 0:
            coded[name] = a.reshape(1)
        else:
            coded[name] = a
    if not coded:
        print(f"nnr_encode: {args.input}: no tensors to encode", file=sys.stderr)
        return 1
    options = _encoder_options(args, framework)
    if args.lossless:
        options["raw_float"] = tuple(n for n, a in coded.items() if a.dtype.kind == "f")
    raw_sizes = {n: a.size * 4 for n, a in coded.items()}
    bar = Progress(len(coded), label="encoding", quiet=args.quiet, force=args.progress)
    done_raw = [0]

    def on_tensor(i, total, name, nbytes):
        done_raw[0] += raw_sizes[name]
        bar.update(item=name, postfix=f"{format_bytes(nbytes)} ratio {done_raw[0] / max(nbytes, 1):.1f}x")

    t0 = time.perf_counter()
    try:
        enc = nnr.Encoder(jobs=args.jobs, **options)
        enc._stateful = False
        data = enc.encode(coded, incremental=False, progress=on_tensor, topology_data=filemeta.build(model, coded, skipped))
    except NNRError as err:
        bar.close()
        print(f"nnr_encode: {args.input}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    bar.close()
    elapsed = time.perf_counter() - t0
    with atomic_output(args.output) as f:
        f.write(data)
    if args.trace:
        from nnr.cli.nnr_decode import _write_trace
        from nnr_core.bitstream.trace import Trace
        trace = Trace()
        nnr.Decoder(jobs=args.jobs).decode(data, trace=trace)
        _write_trace(trace, args.trace)
    if not args.quiet:
        _summary(coded, data, elapsed, model.fmt)
    return 0


def _encoder_options(args, framework):
    return dict(qp=args.qp, qp_density=args.qp_density, nonweight_qp=args.nonweight_qp, dq=not args.no_dq,
                codebook=args.codebook, bitdepth=args.bitdepth, scan_order=args.scan_order,
                row_skipping=not args.no_row_skipping, param_opt=not args.no_param_opt,
                cabac_unary_length_minus1=args.cabac_unary_length_minus1,
                general_profile_idc=args.profile, framework=framework)


def _summary(coded, data, elapsed, fmt):
    import nnr
    decoded = nnr.decode(data)
    n = sum(a.size for a in coded.values())
    raw = sum(a.size * 4 for a in coded.values())
    max_err, sum_err = 0.0, 0.0
    for name, a in coded.items():
        err = np.abs(decoded[name].astype(np.float64).reshape(a.shape) - a.astype(np.float64))
        max_err = max(max_err, float(err.max()))
        sum_err += float(err.sum())
    print(f"tensors             {len(coded)} ({fmt})")
    print(f"parameters          {n}")
    print(f"bytes               {raw} -> {len(data)}")
    print(f"bits per parameter  {8 * len(data) / n:.4f}")
    print(f"ratio               {raw / len(data):.2f}x")
    print(f"error               max {max_err:.4g}  mean {sum_err / n:.4g}")
    print(f"time                {elapsed:.2f} s ({n / max(elapsed, 1e-9) / 1e6:.2f} M parameters/s)")


if __name__ == "__main__":
    sys.exit(main())
