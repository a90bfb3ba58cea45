"""The files the tools read and write besides the model itself: the input checks of nnr_encode and
nnr_rd, an input bitstream (nnr_decode, nnr_info) and a --trace output (nnr_encode, nnr_decode)."""
import os
import sys

from nnr.cli.common import EXIT_FAILED, ToolError, cannot_write
from nnr.errors import NNRError

FORMAT_NAMES = {"pt": "a PyTorch file (torch.save of a state_dict or checkpoint)", "safetensors": "a safetensors file",
                "npz": "a NumPy .npz archive", "h5": "an HDF5 / Keras .h5 file", "onnx": "an ONNX model"}


def check_input(path, fmt):
    """The input must be an existing, non-empty file (a pipe or device is read as it comes)."""
    path = os.fspath(path)
    what = FORMAT_NAMES.get(fmt, "a model file")
    if not os.path.exists(path):
        raise ToolError(f"{path}: no such file", EXIT_FAILED)
    if os.path.isdir(path):
        raise ToolError(f"{path}: is a directory; expected {what}", EXIT_FAILED)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ToolError(f"{path}: empty file; expected {what}", EXIT_FAILED)


def read_error(path, fmt, err):
    """The ToolError for an error that is not an NNRError met while reading the input."""
    if isinstance(err, OSError) and err.strerror:
        return ToolError(f"cannot read {path}: {err.strerror}", EXIT_FAILED)
    text = " ".join(str(err).split())[:300]
    return ToolError(f"{path}: not readable as {FORMAT_NAMES.get(fmt, 'a model file')}: "
                     f"{type(err).__name__}: {text}", EXIT_FAILED)


def read_bitstream(path):
    """The bytes of an input bitstream; a ToolError (status 1) when there are none to read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file", EXIT_FAILED) from None
    except IsADirectoryError:
        raise ToolError(f"{path}: is a directory; expected an NNC bitstream", EXIT_FAILED) from None
    except OSError as err:
        raise ToolError(f"cannot read {path}: {err.strerror or err}", EXIT_FAILED) from None
    if not data:
        raise ToolError(f"{path}: empty file; expected an NNC bitstream", EXIT_FAILED)
    return data


def ndu_count(path, data):
    """The number of NDUs (for the progress bar); a ToolError when the data does not start like an
    NNC bitstream (its first unit must be an NNR_STR)."""
    from nnr_core.syntax.constants import NNR_NDU, NNR_STR
    from nnr_core.syntax.units import split_units, unit_type_of
    try:
        spans = split_units(data)
    except NNRError as err:
        if getattr(err, "unit_index", None) == 0:
            raise ToolError(f"{path}: not an NNC bitstream: {type(err).__name__}: {err}", EXIT_FAILED) from None
        return None                    # a later unit is broken: the decoder says where
    kind = unit_type_of(data, spans[0])
    if kind != NNR_STR:
        raise ToolError(f"{path}: not an NNC bitstream: its first unit has nnr_unit_type {kind}, not NNR_STR "
                        f"({NNR_STR})", EXIT_FAILED)
    return sum(1 for s in spans if unit_type_of(data, s) == NNR_NDU)


def write_trace(trace, target):
    """Write a Trace to `target` ('-' = stdout), atomically."""
    if target == "-":
        trace.write(sys.stdout)
        return
    from nnr.fileio import atomic_output
    try:
        with atomic_output(target, "w") as f:
            trace.write(f)
    except OSError as err:
        raise cannot_write(target, err) from None


def write_encoded(args, encode):
    """Run encode(trace) -> (bitstream, details) and write the bitstream to args.output through a
    temporary file beside it (a failure or an interrupt removes it), then with --trace what the
    encoder wrote to args.trace; returns (bitstream, details)."""
    from nnr.fileio import atomic_output
    from nnr_core.bitstream.trace import Trace
    trace = Trace() if getattr(args, "trace", None) else None
    try:
        with atomic_output(args.output) as out:
            data, details = encode(trace)
            out.write(data)
    except OSError as err:
        raise cannot_write(args.output, err) from None
    if trace is not None:
        write_trace(trace, args.trace)
    return data, details
