"""ONNX models in NNC: the graph as NNR_TPL_ONNX topology (topology_storage_format 2, HLS §6),
the weight tensors as NDUs.

The graph travels as a serialized ModelProto (deflated, NNR_DFL) whose large numeric tensors, the
top-level graph initializers and the `value` tensors of top-level Constant nodes, have their data
removed: each keeps name, dims and data_type, and is marked `data_location = EXTERNAL` with the
external-data entries `location = "nnr"` and `nnr_tensor = <NDU name>` (the initializer's name, or
the Constant node's output name). The NDUs carry them: float16/32/64 tensors quantized with the
usual encoder options (or NNR_PT_RAW_FLOAT with `lossless=True`), integer tensors whose values fit
int32 losslessly as NNR_PT_INT. Everything else (strings, bool, int64 beyond int32, tensors with
fewer than `min_ndu_elements` elements: shapes, axes, scalars) stays inside the graph, exact.
Decoding restores every tensor with its original dims and data_type.

`onnx` is an optional dependency (pip install "nnr[onnx]"), imported on first use."""
import math

import numpy as np

from nnr.errors import ConstraintViolationError, EncoderConfigError, ResourceLimitError, SyntaxValueError
from nnr.optional import import_optional
from nnr.topology.carriage import read_tpl, tpl_fields
from nnr_core.syntax.constants import NNR_TPL_ONNX

INSTALL_HINT = 'ONNX support needs the optional package onnx: pip install "nnr[onnx]" (onnx, onnxruntime)'
LOCATION = "nnr"
MIN_NDU_ELEMENTS = 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
GRAPH_ELEMENT = "nnr_topology_unit_payload.topology_data_byte"
MAX_DIMS = 64
MAX_MODEL_BYTES = (1 << 31) - 1     # protobuf cannot serialize a larger message
# TensorProto.DataType values a carried tensor may have (split_model carries float16/32/64 and
# integers; bfloat16, float8, bool, complex and strings stay in the graph): the numpy dtype of each
CARRIED_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def onnx_module():
    """The onnx package (with numpy_helper), or an error naming what to install."""
    import_optional("onnx.numpy_helper", INSTALL_HINT)     # a submodule: make sure it loads
    return import_optional("onnx", INSTALL_HINT)


def _carried(arr, lossless):
    """The array as the encoder should code it, or None if it stays in the graph."""
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype.itemsize in (2, 4, 8):
        if lossless and arr.dtype.itemsize == 8:
            return None               # float64 is not float32-exact: keep it in the graph
        if not np.all(np.isfinite(arr)):
            return None               # NaN / Inf cannot be coded: keep it exact in the graph
        return arr.astype(np.float32, copy=False)
    if kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if INT32_MIN <= lo and hi <= INT32_MAX:
            return arr.astype(np.int32, copy=False)
    return None


def _externalize(tensor, ndu_name):
    """Remove the tensor's data, keeping name, dims and data_type, and point it at an NDU."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                  "string_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = tensor.EXTERNAL
    for key, value in (("location", LOCATION), ("nnr_tensor", ndu_name)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def tensor_slots(graph):
    """(NDU name, TensorProto) of every top-level initializer and Constant-node value tensor."""
    for t in graph.initializer:
        yield t.name, t
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    yield node.output[0], attr.t


def split_model(model, *, lossless=False, min_ndu_elements=MIN_NDU_ELEMENTS):
    """(graph bytes without the carried tensor data, {NDU name: array to encode}, names of float
    tensors to carry as NNR_PT_RAW_FLOAT when `lossless`). `model` is a ModelProto or a path."""
    onnx = onnx_module()
    from onnx import numpy_helper
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(model)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    tensors, raw = {}, []
    for name, t in tensor_slots(skeleton.graph):
        if t.data_location == t.EXTERNAL or name in tensors or not name or "\0" in name:
            continue
        arr = numpy_helper.to_array(t)
        if arr.size < max(1, min_ndu_elements):
            continue
        coded = _carried(arr, lossless)
        if coded is None:
            continue
        tensors[name] = coded.reshape(-1) if coded.ndim == 0 else coded
        if lossless and coded.dtype.kind == "f":
            raw.append(name)
        _externalize(t, name)
    return skeleton.SerializeToString(), tensors, raw


def _checked_fill(t, ndu, a, unit_index):
    """The decoded array `a` as the graph's tensor `t` (dims and data_type from the graph, which a
    crafted stream controls): checked, then converted without wrapping or truncating values."""
    where = dict(unit_index=unit_index, element=GRAPH_ELEMENT, value=ndu)
    dims = list(t.dims)
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise SyntaxValueError(f"tensor {ndu!r}: ONNX dims {dims[:8]} are not up to {MAX_DIMS} "
                               f"non-negative sizes", **where)
    if math.prod(dims) != a.size:
        raise ConstraintViolationError(f"tensor {ndu!r}: {a.size} decoded elements for ONNX dims {dims}",
                                       unit_index=unit_index, element="topology_elem_id", value=ndu)
    dtype = CARRIED_TYPES.get(t.data_type)
    if dtype is None:
        raise SyntaxValueError(f"tensor {ndu!r}: ONNX data_type {t.data_type} cannot hold NDU data "
                               f"(NDUs carry FLOAT, FLOAT16, DOUBLE and integer tensors)", **where)
    dtype = np.dtype(dtype)
    if (dtype.kind == "f") != (a.dtype.kind == "f") or a.dtype.kind not in "fiu":
        raise ConstraintViolationError(f"tensor {ndu!r}: the graph says {dtype} but the NDU decodes to "
                                       f"{a.dtype}", **where)
    if dtype.kind in "iu" and a.size:
        info = np.iinfo(dtype)
        lo, hi = int(a.min()), int(a.max())
        if lo < info.min or hi > info.max:
            raise ConstraintViolationError(f"tensor {ndu!r}: decoded values in [{lo}, {hi}] do not fit "
                                           f"the graph's {dtype}", **where)
    return a.astype(dtype).reshape(dims)


def rebuild(graph: bytes, tensors: dict, unit_index=None):
    """The complete ModelProto: the graph with every NNR-carried tensor filled in from `tensors`.
    The graph comes from the stream: what it says about a carried tensor (dims, data_type) is
    checked against the decoded tensor, and any mismatch raises a BitstreamError subclass."""
    onnx = onnx_module()
    from onnx import numpy_helper
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph)
    except Exception as exc:            # google.protobuf.message.DecodeError and friends
        raise SyntaxValueError(f"topology_data is not a valid ONNX ModelProto: {' '.join(str(exc).split())[:200]}",
                               unit_index=unit_index, element=GRAPH_ELEMENT) from None
    total = len(graph)
    for name, t in tensor_slots(model.graph):
        if t.data_location != t.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        if info.get("location") != LOCATION:
            continue
        ndu = info.get("nnr_tensor", name)
        if ndu not in tensors:
            raise ConstraintViolationError(f"the ONNX graph refers to tensor {ndu!r}, which no NDU carries",
                                           unit_index=unit_index, element="topology_elem_id", value=ndu)
        filled = _checked_fill(t, ndu, np.asarray(tensors[ndu]), unit_index)
        total += filled.nbytes
        if total > MAX_MODEL_BYTES:
            raise ResourceLimitError(f"the rebuilt ONNX model passes protobuf's limit of {MAX_MODEL_BYTES} "
                                     f"bytes at tensor {ndu!r}")
        t.CopyFrom(numpy_helper.from_array(filled, t.name))
    return model


def encode_onnx(model, *, lossless=False, min_ndu_elements=MIN_NDU_ELEMENTS, compress=True, trace=None,
                **options) -> bytes:
    """Encode an ONNX model (ModelProto or path) into one NNC bitstream: NNR_TPL_ONNX graph + NDUs.

    `lossless=True` carries float tensors as NNR_PT_RAW_FLOAT, so the decoded model is bit-identical;
    `trace` receives what is written (Encoder.encode); other keyword options are the Encoder's (qp,
    dq, codebook, ...; `raw_float` adds names)."""
    import nnr
    graph, tensors, raw = split_model(model, lossless=lossless, min_ndu_elements=min_ndu_elements)
    if not tensors:
        raise EncoderConfigError(f"the ONNX model has no tensor with at least {min_ndu_elements} elements "
                                 "to carry in NDUs")
    if raw:
        options["raw_float"] = tuple(options.get("raw_float", ())) + tuple(raw)
    return nnr.Encoder(**options).encode(
        tensors, incremental=False, topology=tpl_fields(NNR_TPL_ONNX, graph, compress), trace=trace)


def decode_onnx(data, **decoder_options):
    """Decode a bitstream written by `encode_onnx` into a complete onnx.ModelProto."""
    import nnr
    onnx_module()
    dec = nnr.Decoder(**decoder_options)
    tensors = dec.decode(data)
    return model_from_units(dec.units, tensors)


def model_from_units(units, tensors):
    """The ModelProto from a decoder's parsed units and decoded tensors (nnr_decode's path)."""
    fmt, graph, index = read_tpl(units)
    if fmt != NNR_TPL_ONNX:
        raise ConstraintViolationError(f"the bitstream carries no ONNX topology (topology_storage_format "
                                       f"{fmt}, not {NNR_TPL_ONNX})", unit_index=index,
                                       element="topology_storage_format", value=fmt)
    return rebuild(graph, tensors, unit_index=index)
