"""The ONNX branches of nnr_encode / nnr_decode: `nnr_encode model.onnx` carries the graph as
NNR_TPL_ONNX topology and the weights as NDUs; `nnr_decode x.nnr -o model.onnx` rebuilds the model."""
import os
import time

from nnr.cli import modes
from nnr.cli.files import read_error, write_encoded
from nnr.cli.summary import measure, report


def encode_onnx_file(args, options: dict) -> int:
    """nnr_encode for an .onnx input; the CLI has checked the paths and built the Encoder `options`.
    Exit status; failures raise (nnr.cli.common.run reports them in one line)."""
    import nnr
    dec = nnr.Decoder(jobs=getattr(args, "jobs", None))
    data, (model, elapsed, outcome) = write_encoded(args, lambda trace: _encode(args, options, dec, trace))
    if not args.quiet:
        decoded = dec.decode_tensors(data) if outcome.decoded is None else outcome.decoded
        _summary(args, model, dec, decoded, outcome, elapsed, options)
    return 0


def _encode(args, options, dec, trace=None):
    """(bitstream, (ModelProto, seconds, nnr.cli.modes.Outcome)) for args.input in args.mode;
    `dec` decodes what the searching modes check (its units then serve the summary)."""
    from nnr.topology import onnx_tpl
    onnx = onnx_tpl.onnx_module()
    t0 = time.perf_counter()
    try:
        model = onnx.load(args.input)
    except Exception as err:        # protobuf DecodeError and friends
        raise read_error(args.input, "onnx", err) from None
    lossless = getattr(args, "lossless", False)
    tensors = onnx_tpl.split_model(model, lossless=lossless)[1] if args.mode in ("quality", "bounded") else {}
    outcome = modes.encode(
        args, tensors, options, lambda opts, sink: onnx_tpl.encode_onnx(model, lossless=lossless, trace=sink, **opts),
        dec.decode_tensors, trace)
    return outcome.data, (model, time.perf_counter() - t0, outcome)


def _summary(args, model, dec, decoded, outcome, elapsed, options):
    from onnx import numpy_helper

    from nnr.topology import onnx_tpl
    _, originals, _ = onnx_tpl.split_model(model)
    rebuilt = onnx_tpl.model_from_units(dec.units, {t.name: t.values for t in decoded})
    restored = {name: numpy_helper.to_array(t) for name, t in onnx_tpl.tensor_slots(rebuilt.graph)
                if name in originals}
    data = outcome.data
    rows = measure(originals, restored, {n: a.dtype.name for n, a in restored.items()},
                   {t.name: t.qp for t in decoded})
    n = sum(a.size for a in originals.values())
    size = os.path.getsize(args.input)
    head = [f"tensors             {len(originals)} in NDUs (onnx), graph in NNR_TPL",
            f"parameters          {n}",
            f"mode                {modes.describe(args, args.mode, outcome)}",
            f"bytes               {size} -> {len(data)}",
            f"ratio               {size / len(data):.2f}x"]
    report("nnr_encode", head, rows, [f"time                {elapsed:.2f} s"],
           verbose=getattr(args, "verbose", False), notes=modes.notes(outcome),
           advice=modes.advice(args, args.mode, options, originals),
           limit=modes.limit(args, args.mode, options, originals))


def carries_onnx(decoder) -> bool:
    """Whether the decoded bitstream has an NNR_TPL_ONNX topology."""
    from nnr_core.syntax.constants import NNR_TPL, NNR_TPL_ONNX
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
