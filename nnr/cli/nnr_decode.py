"""nnr_decode: decode an NNC bitstream into a model file (.npz, .pt/.pth, .safetensors, .h5, .onnx)."""
import sys

from nnr.checksum import output_sha256, tensor_sha256
from nnr.cli.common import (EXIT_FAILED, EXIT_USAGE, ToolError, cannot_write, check_output, int_in,
                            model_format, parser, preload, run)
from nnr.cli.files import ndu_count, read_bitstream, write_trace
from nnr.errors import NNRError

OUTPUT_FORMATS = "npz, pt, safetensors, h5, onnx"


def build_parser():
    p = parser("nnr_decode", "Decode an NNC (ISO/IEC 15938-17) bitstream.")
    p.add_argument("input", help="NNC bitstream (.nnr / .nnc)")
    p.add_argument("-o", "--output", help="output model file: .npz, .pt/.pth, .safetensors or .h5 (original "
                                          "names, shapes and dtypes as nnr_encode recorded them), or .onnx "
                                          "for a bitstream carrying an ONNX graph; "
                                          "omitted: decode and check only")
    p.add_argument("--format", help=f"output format if the extension of -o does not say ({OUTPUT_FORMATS})")
    p.add_argument("--verify", metavar="SHA256",
                   help="expected SHA-256 of the whole decoded output (see nnr.checksum.output_sha256); "
                        "exit status 1 on a mismatch, and no output is written")
    p.add_argument("--trace", metavar="FILE", help="write one line per syntax element to FILE ('-' = stdout)")
    p.add_argument("--profile0-variant", choices=["nncodec1", "nncodec2"], default="nncodec1",
                   help="how to read edition-1 payloads (general_profile_idc 0); default nncodec1")
    p.add_argument("-j", "--jobs", type=int_in(0), default=0,
                   help="worker threads decoding units (and block rows) concurrently (default 0: all cores)")
    p.add_argument("--max-elements", type=int_in(0), default=None, metavar="N",
                   help="refuse a bitstream whose tensors total more than N elements (default 2^30; 0: no limit)")
    p.add_argument("--max-topology-bytes", type=int_in(0), default=None, metavar="N",
                   help="refuse an NNR_TPL topology larger than N bytes, inflated (default 2^28; 0: no limit)")
    p.add_argument("--no-recompose", action="store_true",
                   help="write a low-rank decomposed weight as its members <W>_G and <W>_H instead of W = G·H")
    p.add_argument("--lsa", action="store_true",
                   help="multiply each local-scaling vector into its weight's rows (and leave it out)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run("nnr_decode", _decode, args, subject=args.input)


def _decode(args):
    from nnr.decoder import Decoder
    from nnr.progress import Progress
    from nnr_core.bitstream.trace import Trace

    if args.output:
        check_output(args.output)
        fmt = model_format(args.output, args.format, what="output")
        preload(fmt)
    elif args.format:
        raise ToolError("--format names the format of -o; there is no -o", EXIT_USAGE)
    if args.trace and args.trace != "-":
        check_output(args.trace, "--trace")
    data = read_bitstream(args.input)
    total = ndu_count(args.input, data)
    trace = Trace() if args.trace else None
    limits = {k: v or None for k, v in (("max_total_elements", args.max_elements),
                                         ("max_topology_bytes", args.max_topology_bytes)) if v is not None}
    decoder = Decoder(profile0_variant=args.profile0_variant, jobs=args.jobs, **limits)
    try:
        with Progress(total, label="decoding", quiet=args.quiet, force=args.progress) as bar:
            tensors = decoder.decode(data, trace=trace, progress=lambda unit, done: bar.update(
                item=",".join(t.name for t in done) or f"unit {unit.index}"),
                recompose=not args.no_recompose, lsa=args.lsa)
    finally:
        if trace is not None:
            write_trace(trace, args.trace)
    digest = output_sha256(tensors)
    if not args.quiet:
        for name, a in tensors.items():
            print(f"{name}\t{a.dtype}\t{list(a.shape)}\t{tensor_sha256(a)}")
        print(f"output sha256 {digest}")
    if args.verify and args.verify.lower() != digest:
        raise ToolError(f"checksum mismatch: expected {args.verify.lower()}, got {digest}"
                        + ("; nothing written" if args.output else ""), EXIT_FAILED)
    if args.output:
        try:
            _save(args.output, fmt, decoder, tensors)
        except NNRError as err:
            raise ToolError(f"{args.output}: {type(err).__name__}: {err}", EXIT_FAILED) from None
        except OSError as err:
            raise cannot_write(args.output, err) from None
    return 0


def _save(path, fmt, decoder, tensors):
    """Write the decoded tensors as a model file, restoring what nnr_encode recorded."""
    # ONNX output (nnr/topology): the graph from the NNR_TPL unit with the decoded weights.
    if fmt == "onnx":
        from nnr.cli.onnx_file import save_onnx
        return save_onnx(path, decoder, tensors)
    from nnr import filemeta
    from nnr.modelio import save_model
    from nnr_core.syntax.constants import NNR_TPL
    tpl = next((u.fields for u in decoder.units if u.nnr_unit_type == NNR_TPL), {})
    meta = filemeta.parse(tpl.get("topology_data", ""))
    save_model(path, filemeta.to_model(tensors, meta, fmt), fmt=fmt)


if __name__ == "__main__":
    sys.exit(main())
