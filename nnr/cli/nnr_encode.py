"""nnr_encode: compress a model file (.pt/.pth, .safetensors, .npz, .h5, .onnx) into an NNC bitstream."""
import sys
import time

import argparse

import numpy as np

from nnr.cli import modes
from nnr.cli.common import (EXIT_FAILED, EXIT_USAGE, ToolError, check_output, int_in, model_format, parser,
                            preload, run)
from nnr.cli.files import check_input, read_error, write_encoded
from nnr.errors import NNRError


def build_parser():
    p = parser("nnr_encode", __doc__)
    p.add_argument("input", help="model file: .pt/.pth (state_dict or checkpoint), .safetensors, .npz, .h5, "
                                 ".onnx (graph and weights; needs the onnx package)")
    p.add_argument("-o", "--output", required=True, help="output NNC bitstream")
    p.add_argument("--format", help="input format if the extension does not say (pt, safetensors, npz, h5, onnx)")
    p.add_argument("--max-relative-error", type=_fraction, metavar="B", default=modes.DEFAULT_BOUND,
                   help="the bound on each tensor's relative RMSE (decoded RMSE / RMS of the tensor), default "
                        "%g. By default nnr_encode uses the reference's QPs (qp %d, --nonweight-qp) and gives a "
                        "tensor they would leave above B the coarsest QP that brings it within B; with --qp, "
                        "--codebook, --bitdepth or --quality, a tensor above B is named in a warning"
                        % (modes.DEFAULT_BOUND, modes.REFERENCE_QP))
    p.add_argument("--qp", type=int_in(-4096, 4095),
                   help="one absolute QP for weight tensors (step 2^(QP/4) at qp_density 2), as the reference "
                        "does: with the other defaults, its bytes")
    p.add_argument("--quality", type=_fraction, metavar="R",
                   help="a relative error target instead: every tensor of 2+ dimensions gets the coarsest QP "
                        "whose decoded relative RMSE is at most R; 1-D tensors take --nonweight-qp")
    p.add_argument("--bpp", type=_positive, metavar="B",
                   help="a size budget instead: the whole stream takes at most B bits per floating-point "
                        "parameter (and ends within 0.5 %% under it where single QP steps allow); each weight "
                        "tensor gets the QP of least distortion that fits (nnr.encode's target_bpp)")
    p.add_argument("--importance", metavar="FILE",
                   help="per-parameter importance (.safetensors or .npz, the model's tensor names; e.g. "
                        "nnr.importance's result): importance-weighted levels, and with --bpp the allocation "
                        "minimises the importance-weighted error")
    p.add_argument("--hessians", metavar="FILE",
                   help="layers' input second moments (.safetensors or .npz under the weights' names; e.g. "
                        "nnr.rd.layer_hessians' result): those tensors' levels rounded for the least output "
                        "error (GPTQ), without dependent quantization")
    p.add_argument("--qp-density", type=int_in(0, 7), default=None,
                   help="qp_density 0..7 (default 2; with --bpp 4)")
    p.add_argument("--nonweight-qp", type=int_in(-4096, 4095), default=-75,
                   help="QP of 1-D / non-weight tensors (default -75)")
    p.add_argument("--no-dq", action="store_true", help="uniform quantization without dependent quantization")
    p.add_argument("--codebook", nargs="?", const="cheaper", choices=["cheaper", "always"],
                   help="codebook quantization (at the absolute --qp, default %d): where it is smaller than "
                        "uniform (--codebook, the reference's codebook_mode 2) or for every tensor "
                        "(--codebook always, mode 1)" % modes.REFERENCE_QP)
    p.add_argument("--bitdepth", type=int_in(1, 31), help="integer-aligned bit depth (QP derived per tensor "
                                                          "from its range, instead of --quality or --qp)")
    p.add_argument("--scan-order", type=int_in(0, 4), default=0,
                   help="0 row-major, 1..4 block scans with entry points")
    p.add_argument("--no-row-skipping", action="store_true")
    p.add_argument("--no-param-opt", action="store_true", help="do not optimise context parameter sets")
    p.add_argument("--cabac-unary-length-minus1", type=int_in(0, 255), default=10)
    p.add_argument("--profile", type=int, default=1, choices=[0, 1], help="general_profile_idc (default 1)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading whole pickled PyTorch modules")
    p.add_argument("--allow-external", action="store_true",
                   help="read HDF5 datasets whose data lives in other files (external storage, virtual datasets)")
    p.add_argument("--lossless", action="store_true",
                   help="float tensors as NNR_PT_RAW_FLOAT (uncompressed): float32/float16 weights decode "
                        "bit-identically (for .onnx input: the whole model)")
    p.add_argument("--detect-grid", action="store_true",
                   help="code float tensors whose values lie on an NNC step grid (a model decoded from NNC) "
                        "exactly on that grid")
    p.add_argument("--bnf", action="store_true",
                   help="fold each batch norm into the layer before it (its LS and bias, as the reference's "
                        "bnf): for state_dicts whose names show which batch norm follows which layer; "
                        "nnr_decode unfolds them")
    p.add_argument("--trace", metavar="FILE",
                   help="write what the encoder wrote, one line per syntax element and per NDU payload tensor, "
                        "in nnr_decode --trace's format ('-' = stdout)")
    p.add_argument("-j", "--jobs", type=int_in(0), default=0,
                   help="worker threads coding tensors concurrently (default 0: all cores)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no summary, notes or warnings; the default mode and --quality "
                        "still check what they wrote)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="the summary lists every tensor's QP and error (absolute and relative)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return p


def _fraction(text):
    """argparse type of --quality and --max-relative-error: a relative RMSE strictly between 0 and 1
    (1 is what a tensor decoded to all zeros has)."""
    value = _positive(text, "a number")
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be below 1 (a tensor of zeros has relative RMSE 1), not {text}")
    return value


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run("nnr_encode", _encode, args, subject=args.input)


def _positive(text, what="a number of bits per parameter"):
    """argparse type of --bpp: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be {what} > 0, not {text}")
    return value


def _encode(args):
    from nnr.cli.onnx_file import encode_onnx_file
    args.mode = modes.resolve(args)
    fmt = model_format(args.input, args.format)
    onnx = fmt == "onnx"
    check_input(args.input, fmt)
    check_output(args.output)
    if args.trace and args.trace != "-":
        check_output(args.trace, "--trace")
    if args.bnf and (onnx or args.bpp is not None or args.lossless):
        flag = "an .onnx input" if onnx else "--bpp" if args.bpp is not None else "--lossless"
        raise ToolError(f"--bnf cannot be combined with {flag}: the folded layers are coded as blocks, which "
                        f"{'the ONNX path does not write' if onnx else 'it does not code'}", EXIT_USAGE)
    options = _encoder_options(args, "pytorch" if fmt == "pt" else "generic")
    _check_options(args, options)
    preload(fmt)
    if onnx:
        return encode_onnx_file(args, options)
    data, (model, coded, raw, elapsed, outcome, params) = write_encoded(
        args, lambda trace: _encode_model(args, fmt, options, trace))
    if not args.quiet:
        _summary(args, model, coded, raw, outcome, elapsed, options, params)
    return 0


def _check_options(args, options):
    """The encoder options as the codec sees them, refused before the model is read."""
    import nnr
    try:
        nnr.Encoder(jobs=args.jobs, **options)
    except NNRError as err:
        raise ToolError(f"invalid option: {err}", EXIT_USAGE) from None


def _encode_model(args, fmt, options, trace=None):
    import nnr
    from nnr import filemeta
    from nnr.modelio import load_model
    from nnr.progress import Progress, format_bytes
    from nnr.cli.summary import dtype_bytes
    try:
        # safetensors are memory-mapped: tensors are read as they are coded (a model larger than RAM)
        model = load_model(args.input, fmt=fmt, allow_pickle=args.allow_pickle, allow_float64=True, mmap=True,
                           allow_external=args.allow_external)
    except NNRError:
        raise
    except Exception as err:          # the loaders' libraries raise what they like on a bad file
        raise read_error(args.input, fmt, err) from None
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
        raise ToolError(f"{args.input}: no tensors to encode", EXIT_FAILED)
    if args.lossless:
        options["raw_float"] = tuple(n for n, a in coded.items() if a.dtype.kind == "f")
    elif (model.extras or {}).get("quantized"):
        options["raw_float"] = _quantized_layers_floats(model, coded)
    # what the tensors take in the input: at their own dtypes (float16 2 bytes, float64 8, ...)
    raw_sizes = {n: a.size * dtype_bytes(model.dtypes.get(n, a.dtype.name)) for n, a in coded.items()}
    scaled = _scaled_grids(coded, options) if args.detect_grid else {}
    folded, bnf_meta = (_fold(args, coded, options) if args.bnf else (coded, None))
    topology_data = filemeta.build(model, coded, skipped, bnf_meta, scaled)

    def code(opts, sink):
        done_raw = [0]
        with Progress(len(folded), label="encoding", quiet=args.quiet, force=args.progress) as bar:
            def on_tensor(i, total, name, nbytes):
                done_raw[0] += raw_sizes.get(name, 0)
                bar.update(item=name, postfix=f"{format_bytes(nbytes)} ratio {done_raw[0] / max(nbytes, 1):.1f}x")

            enc = nnr.Encoder(jobs=args.jobs, stateful=False, **opts)
            return enc.encode(coded, incremental=False, progress=on_tensor, topology_data=topology_data, trace=sink)

    t0 = time.perf_counter()
    with Progress(label="choosing QPs", quiet=args.quiet, force=args.progress) as bar:
        def on_search(done, total, name):
            bar.total = total
            bar.update(item=name)
        outcome = modes.encode(args, folded, options, code, lambda d: _decode_back(args, d), trace, progress=on_search)
    return outcome.data, (model, folded, sum(raw_sizes.values()), time.perf_counter() - t0, outcome,
                          sum(a.size for a in coded.values()))


def _scaled_grids(coded, options):
    """--detect-grid: float tensors on a uniform grid whose step is no NNC step (fake-quantized weights)
    become their integer levels (NNR_PT_INT, in `coded`); {name: step} for the file meta, from which
    nnr_decode restores the values exactly. Tensors on an NNC step grid stay floats (the encoder's
    detect_grid codes them exactly, readable by any decoder)."""
    from nnr_core.quant.grid import grid_qp, uniform_step
    density = options.get("qp_density", 2)
    out = {}
    for name, a in list(coded.items()):
        if a.dtype != np.float32 or a.size < 2 or grid_qp(a, density) is not None:
            continue
        step = uniform_step(a)
        if step is not None:
            coded[name] = np.rint(a.astype(np.float64) / float(step)).astype(np.int32)
            out[name] = float(step)
    return out


def _quantized_layers_floats(model, coded):
    """The float tensors of a quantized model's quantized layers (biases, scales), carried uncoded so
    that the model round-trips exactly: the modules holding a quantized tensor or a scale and a
    zero point (QuantStub, quantized activations)."""
    def prefix(name):
        return name.rsplit(".", 1)[0] if "." in name else ""
    names = set(coded)
    layers = {prefix(n) for n in model.extras["quantized"]}
    layers |= {prefix(n) for n in names if n.endswith(".scale") and prefix(n) + ".zero_point" in names}
    layers |= {prefix(prefix(n)) for n in model.extras["quantized"] if "._packed_params." in n}
    return tuple(n for n, a in coded.items() if a.dtype.kind == "f"
                 and any(n.startswith(p + ".") or n == p for p in layers if p))


def _fold(args, coded, options):
    """--bnf: (the tensors as folded, which the checks and the summary compare with the decoded ones;
    the folded blocks' members for the file meta). The encoder folds `coded` itself (bnf=True), so
    the stream is the reference's compress(..., bnf=True) of the state_dict."""
    from nnr.bnf import bn_names_of_state_dict, folded_blocks, guess_block_id_and_param_type
    from nnr_core.encoder.bnf import fold_bn
    bn = bn_names_of_state_dict(coded)
    if not bn:
        raise ToolError(f"--bnf: {args.input} has no batch norm (a prefix with 1-D weight, bias, running_mean "
                        "and running_var of one length)", EXIT_FAILED)
    option = guess_block_id_and_param_type(coded, bn)
    blocks = folded_blocks(option)
    if not blocks:
        raise ToolError(f"--bnf: no batch norm of {args.input} follows a layer with as many output channels",
                        EXIT_FAILED)
    try:
        folded, _, _ = fold_bn(coded, option)
    except NNRError as err:
        raise ToolError(f"--bnf: {err}", EXIT_FAILED) from None
    options.update(block_id_and_param_type=option, bnf=True)
    members = {n for w, b, _, bns in blocks for n in (w, b, w + "_scaling", *bns.values()) if n in option["block_identifier"]}
    return folded, {key: {n: str(v) for n, v in option[key].items() if n in members}
                    for key in ("block_identifier", "parameter_type")}


def _encoder_options(args, framework):
    options = dict(qp=modes.REFERENCE_QP if args.qp is None else args.qp, nonweight_qp=args.nonweight_qp,
                   dq=not args.no_dq, codebook={None: False, "cheaper": True, "always": "always"}[args.codebook],
                   bitdepth=args.bitdepth,
                   scan_order=args.scan_order, row_skipping=not args.no_row_skipping, param_opt=not args.no_param_opt,
                   cabac_unary_length_minus1=args.cabac_unary_length_minus1,
                   general_profile_idc=args.profile, framework=framework)
    if args.detect_grid:
        options["detect_grid"] = True
    if args.qp_density is not None or args.bpp is None:     # --bpp alone: the allocation's qp_density
        options["qp_density"] = 2 if args.qp_density is None else args.qp_density
    if args.bpp is not None:
        options["target_bpp"] = args.bpp
    if args.importance:
        options["importance"] = _read_arrays(args.importance, "--importance", np.float32)
    if args.hessians:
        options["hessians"] = _read_arrays(args.hessians, "--hessians", np.float64)
    return options


def _read_arrays(path, option, dtype):
    """{name: array} from a .safetensors or .npz file; a ToolError (status 1) otherwise."""
    from nnr.modelio import load_model
    try:
        return {n: np.asarray(a, dtype=dtype) for n, a in load_model(path, allow_float64=True).tensors.items()}
    except (NNRError, OSError, ValueError) as err:
        raise ToolError(f"{option} {path}: {err}", EXIT_FAILED) from None


def _decode_back(args, data):
    """Decode the written bitstream for the summary's errors: DecodedTensors."""
    import nnr
    return nnr.Decoder(jobs=args.jobs, keep_state=False).decode_tensors(data)


def _summary(args, model, coded, raw, outcome, elapsed, options, n):
    """The summary: `coded` as the codec saw it (folded with --bnf), `n` parameters in the model."""
    from nnr.cli.summary import measure, report
    data = outcome.data
    decoded = _decode_back(args, data) if outcome.decoded is None else outcome.decoded
    rows = measure(coded, {t.name: t.values for t in decoded}, model.dtypes, {t.name: t.qp for t in decoded})
    folded = f" ({sum(a.size for a in coded.values())} after batch-norm folding)" if args.bnf else ""
    head = [f"tensors             {len(coded)} ({model.fmt})",
            f"parameters          {n}{folded}",
            f"mode                {modes.describe(args, args.mode, outcome)}",
            f"bytes               {raw} -> {len(data)}",
            f"bits per parameter  {8 * len(data) / n:.4f}",
            f"ratio               {raw / len(data):.2f}x"]
    tail = [f"time                {elapsed:.2f} s ({n / max(elapsed, 1e-9) / 1e6:.2f} M parameters/s)"]
    report("nnr_encode", head, rows, tail, verbose=args.verbose, notes=modes.notes(outcome),
           advice=modes.advice(args, args.mode, options, coded), limit=modes.limit(args, args.mode, options, coded))


if __name__ == "__main__":
    sys.exit(main())
