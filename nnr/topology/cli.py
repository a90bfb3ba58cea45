"""The ONNX branches of nnr_encode / nnr_decode: `nnr_encode model.onnx` carries the graph as
NNR_TPL_ONNX topology and the weights as NDUs; `nnr_decode x.nnr -o model.onnx` rebuilds the model."""
import os
import sys
import time

from nnr.errors import NNRError


def is_onnx_path(path, fmt=None) -> bool:
    return (fmt or "").lower() == "onnx" or (fmt is None and os.fspath(path).lower().endswith(".onnx"))


def encode_onnx_file(args, options: dict) -> int:
    """nnr_encode for an .onnx input; `options` are the Encoder options the CLI built. Exit status."""
    from nnr.fileio import atomic_output
    from nnr.topology import onnx_tpl
    t0 = time.perf_counter()
    try:
        onnx = onnx_tpl._onnx()
        try:
            model = onnx.load(args.input)
        except OSError as err:
            print(f"nnr_encode: cannot read {args.input}: {err.strerror or err}", file=sys.stderr)
            return 2
        except Exception as err:        # protobuf DecodeError and friends
            print(f"nnr_encode: {args.input}: not an ONNX model: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        data = onnx_tpl.encode_onnx(model, lossless=getattr(args, "lossless", False), **options)
    except NNRError as err:
        print(f"nnr_encode: {args.input}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0
    with atomic_output(args.output) as f:
        f.write(data)
    if getattr(args, "trace", None):
        import nnr
        from nnr.cli.nnr_decode import _write_trace
        from nnr_core.bitstream.trace import Trace
        trace = Trace()
        nnr.Decoder().decode(data, trace=trace)
        _write_trace(trace, args.trace)
    if not args.quiet:
        _summary(args.input, model, data, elapsed)
    return 0


def _summary(path, model, data, elapsed):
    import numpy as np

    from nnr.topology import onnx_tpl
    decoded = onnx_tpl.decode_onnx(data)
    _, originals, _ = onnx_tpl.split_model(model)
    restored = dict(onnx_tpl._tensor_slots(decoded.graph))
    from onnx import numpy_helper
    n = sum(a.size for a in originals.values())
    max_err, sum_err = 0.0, 0.0
    for name, a in originals.items():
        b = numpy_helper.to_array(restored[name]).astype(np.float64).reshape(a.shape)
        err = np.abs(b - a.astype(np.float64))
        max_err, sum_err = max(max_err, float(err.max())), sum_err + float(err.sum())
    size = os.path.getsize(path)
    print(f"tensors             {len(originals)} in NDUs (onnx), graph in NNR_TPL")
    print(f"parameters          {n}")
    print(f"bytes               {size} -> {len(data)}")
    print(f"ratio               {size / len(data):.2f}x")
    print(f"error               max {max_err:.4g}  mean {sum_err / max(n, 1):.4g}")
    print(f"time                {elapsed:.2f} s")


def carries_onnx(decoder) -> bool:
    """Whether the decoded bitstream has an NNR_TPL_ONNX topology."""
    from nnr.topology.carriage import NNR_TPL, NNR_TPL_ONNX
    return any(u.nnr_unit_type == NNR_TPL and u.fields.get("topology_storage_format") == NNR_TPL_ONNX
               for u in decoder.units)


def save_onnx(path, decoder, tensors):
    """nnr_decode -o model.onnx: the complete model, written atomically. Raises NNRError."""
    from nnr.errors import ConstraintViolationError
    from nnr.fileio import atomic_output
    from nnr.topology import onnx_tpl
    if not carries_onnx(decoder):
        raise ConstraintViolationError("the bitstream carries no ONNX graph (NNR_TPL_ONNX topology); "
                                       "write its tensors to .npz / .pt / .safetensors / .h5 instead",
                                       element="topology_storage_format")
    model = onnx_tpl.model_from_units(decoder.units, tensors)
    with atomic_output(path) as f:
        f.write(model.SerializeToString())
