"""nnr_decode: decode an NNC bitstream into a .npz file."""
import argparse
import sys

from nnr.checksum import output_sha256, tensor_sha256
from nnr.errors import NNRError


def build_parser():
    p = argparse.ArgumentParser(prog="nnr_decode", description="Decode an NNC (ISO/IEC 15938-17) bitstream.")
    p.add_argument("input", help="NNC bitstream (.nnr / .nnc)")
    p.add_argument("-o", "--output", help="output model file: .npz, .pt/.pth, .safetensors or .h5 (original "
                                          "names, shapes and dtypes as nnr_encode recorded them), or .onnx "
                                          "for a bitstream carrying an ONNX graph; "
                                          "omitted: decode and check only")
    p.add_argument("--verify", metavar="SHA256",
                   help="expected SHA-256 of the whole decoded output (see nnr.checksum.output_sha256); "
                        "exit status 1 on a mismatch")
    p.add_argument("--trace", metavar="FILE", help="write one line per syntax element to FILE ('-' = stdout)")
    p.add_argument("--profile0-variant", choices=["nncodec1", "nncodec2"], default="nncodec1",
                   help="how to read edition-1 payloads (general_profile_idc 0); default nncodec1")
    p.add_argument("-j", "--jobs", type=int, default=0,
                   help="worker threads decoding units (and block rows) concurrently (default 0: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from nnr.decoder import Decoder
    from nnr_core.bitstream.trace import Trace

    try:
        with open(args.input, "rb") as f:
            data = f.read()
    except OSError as err:
        print(f"nnr_decode: cannot read {args.input}: {err.strerror}", file=sys.stderr)
        return 2
    trace = Trace() if args.trace else None
    try:
        decoder = Decoder(profile0_variant=args.profile0_variant, jobs=args.jobs)
    except NNRError as err:
        print(f"nnr_decode: {err}", file=sys.stderr)
        return 2
    try:
        tensors = decoder.decode(data, trace=trace)
    except NNRError as err:
        print(f"nnr_decode: {args.input}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if trace is not None:
            _write_trace(trace, args.trace)
    digest = output_sha256(tensors)
    if not args.quiet:
        for name, a in tensors.items():
            print(f"{name}\t{a.dtype}\t{list(a.shape)}\t{tensor_sha256(a)}")
        print(f"output sha256 {digest}")
    if args.output:
        try:
            _save(args.output, decoder, tensors)
        except NNRError as err:
            print(f"nnr_decode: {args.output}: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    if args.verify and args.verify.lower() != digest:
        print(f"nnr_decode: checksum mismatch: expected {args.verify.lower()}, got {digest}", file=sys.stderr)
        return 1
    return 0


def _save(path, decoder, tensors):
    """Write the decoded tensors as a model file, restoring what nnr_encode recorded."""
    # ONNX output (nnr/topology): the graph from the NNR_TPL unit with the decoded weights.
    from nnr.topology.cli import is_onnx_path, save_onnx
    if is_onnx_path(path):
        return save_onnx(path, decoder, tensors)
    from nnr import filemeta
    from nnr.modelio import detect_format, save_model
    tpl = next((u.fields for u in decoder.units if u.nnr_unit_type == 3), {})
    meta = filemeta.parse(tpl.get("topology_data", ""))
    fmt = detect_format(path)
    save_model(path, filemeta.to_model(tensors, meta, fmt), fmt=fmt)


def _write_trace(trace, target):
    if target == "-":
        trace.write(sys.stdout)
        return
    from nnr.fileio import atomic_output
    with atomic_output(target, "w") as f:
        trace.write(f)


if __name__ == "__main__":
    sys.exit(main())
