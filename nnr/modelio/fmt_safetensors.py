"""safetensors model files: tensors read one at a time through safe_open; the header metadata
(__metadata__) kept in extras["metadata"] and written back.

The JSON header is read and checked by us first (every entry a dtype NNR codes, a shape of
non-negative ints whose size matches its data_offsets, data inside the file, the byte budget), so
that a forged header gets a clear EncoderConfigError or ResourceLimitError before anything is read.
"""
import importlib
import json
import math
import os
import struct

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import bf16_bits_to_f32, f32_to_bf16_bits, restore, to_codec
from nnr.modelio.guard import Budget, head, reading, refuse
from nnr.modelio.model import Model, require

_MAX_HEADER = 100_000_000  # the limit the safetensors library itself enforces
_EXPECTED = "an 8-byte little-endian header length and a JSON header (safetensors)"
# safetensors dtypes numpy reads directly: such tensors are memory-mapped, not read, so a model
# larger than RAM can be encoded tensor by tensor
_NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4",
                 "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
# memory-mapped tensors of these dtypes reach the codec without a copy (others are converted)
_ZERO_COPY = {"F32", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}


def _read_header(path):
    """The JSON header: {name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}, and the
    offset of the data section. Read directly so that no tensor is materialised for it."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(64)
        if len(start) < 8:
            raise refuse(path, "a safetensors file", _EXPECTED, start)
        (size,) = struct.unpack("<Q", start[:8])
        if size > min(_MAX_HEADER, file_size - 8):
            raise refuse(path, "a safetensors file", _EXPECTED, start)
        f.seek(8)
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise EncoderConfigError(f"{path!s} is not a safetensors file: its header is not JSON "
                                 f"({type(err).__name__}: {str(err)[:100]})") from None
    if not isinstance(header, dict):
        raise EncoderConfigError(f"{path!s} is not a safetensors file: its header is a JSON "
                                 f"{type(header).__name__}, not an object")
    return header, 8 + size, file_size


def _ints(value, count=None):
    """`value` as a tuple of non-negative ints (`count` of them), or None if it is not one."""
    if not isinstance(value, list) or (count is not None and len(value) != count):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return None
    return tuple(value)


def _entry(path, name, entry):
    """(dtype, shape, begin, end) of one header entry, checked."""
    where = f"tensor {name!r} in {path!s}"
    if not isinstance(entry, dict):
        raise EncoderConfigError(f"{where}: its header entry is a JSON {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), _ints(entry.get("shape")), _ints(entry.get("data_offsets"), 2)
    if not isinstance(dtype, str):
        raise EncoderConfigError(f"{where}: its header entry has no dtype string")
    if dtype != "BF16" and dtype not in _NUMPY_DTYPES:
        raise EncoderConfigError(f"{where} has dtype {dtype[:20]} which NNR cannot code: only F32, F16, "
                                 f"BF16, F64 (with allow_float64), integer and BOOL tensors")
    if shape is None or len(shape) > 64:
        raise EncoderConfigError(f"{where}: shape {str(entry.get('shape'))[:80]} is not a list of "
                                 f"at most 64 non-negative ints")
    if offsets is None or offsets[0] > offsets[1]:
        raise EncoderConfigError(f"{where}: data_offsets {str(entry.get('data_offsets'))[:80]} is not "
                                 f"[begin, end] with 0 <= begin <= end")
    itemsize = 2 if dtype == "BF16" else np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    if math.prod(shape) * itemsize != offsets[1] - offsets[0]:
        raise EncoderConfigError(f"{where}: shape {list(shape)} of {dtype} takes "
                                 f"{math.prod(shape) * itemsize} bytes but data_offsets span "
                                 f"{offsets[1] - offsets[0]}")
    return dtype, shape, offsets[0], offsets[1]


def _plan(path, header, data_start, file_size, options):
    """{name: (dtype, shape, begin, end, mapped)} in the file's data order, every entry checked
    against the byte budget (tensors memory-mapped without a copy excepted) and the file's size."""
    budget = Budget(path, options.max_bytes)
    entries = {name: _entry(path, name, entry) for name, entry in header.items()}
    plan = {}
    # The file's order is the order of the data, which the header's JSON does not keep.
    for name in sorted(entries, key=lambda n: (entries[n][2], entries[n][3], n)):
        dtype, shape, begin, end = entries[name]
        mapped = options.mmap and dtype in _ZERO_COPY and begin < end
        if not mapped:
            budget.take(name, shape, 4 if dtype in ("BF16", "F16") else np.dtype(_NUMPY_DTYPES[dtype]).itemsize)
        if data_start + end > file_size:
            raise EncoderConfigError(
                f"tensor {name!r} in {path!s}: its data (bytes {begin}..{end} of the data section) "
                f"runs past the end of the file ({file_size} bytes): truncated or forged")
        plan[name] = (dtype, shape, begin, end, mapped)
    return plan


def load(path, options):
    """options.mmap: memory-map the tensors numpy can read directly instead of reading them (float32
    and integer tensors then cost no memory until used: a model larger than RAM can be encoded)."""
    st = require("safetensors", "reading", "safetensors")
    header, data_start, file_size = _read_header(path)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise EncoderConfigError(f"{path!s}: the safetensors __metadata__ is not an object of strings")
    plan = _plan(path, header, data_start, file_size, options)
    tensors, dtypes = {}, {}
    with reading(path, "safetensors"), st.safe_open(path, framework="numpy") as f:
        for name, (dtype, shape, begin, end, mapped) in plan.items():
            if dtype == "BF16":
                # numpy has no bfloat16: read the bit patterns (the widening is exact).
                bits = np.fromfile(path, dtype="<u2", count=(end - begin) // 2, offset=data_start + begin)
                tensors[name] = bf16_bits_to_f32(bits).reshape(shape)
                dtypes[name] = "bfloat16"
                continue
            if mapped:
                value = np.memmap(path, dtype=_NUMPY_DTYPES[dtype], mode="r", offset=data_start + begin,
                                  shape=shape)
            else:
                value = f.get_tensor(name)
            tensors[name], dtypes[name] = to_codec(name, value, allow_float64=options.allow_float64)
    return Model(tensors, dtypes, "safetensors", {"metadata": metadata})


def save(path, model, *, same_kind):
    st = require("safetensors", "writing", "safetensors")
    metadata = model.extras.get("metadata") if same_kind else None
    arrays, bf16 = {}, []
    for name, array in model.tensors.items():
        dtype = model.dtypes.get(name)
        value = restore(name, array, dtype)
        if dtype == "bfloat16":
            value = f32_to_bf16_bits(value)
            bf16.append(name)
        arrays[name] = np.asarray(value, order="C")
    data = _serialize(arrays, bf16, metadata)
    with atomic_output(path) as f:
        f.write(data)


def _serialize(arrays, bf16, metadata):
    import safetensors.numpy
    if not bf16:
        return safetensors.numpy.save(arrays, metadata=metadata)
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        torch = None
    if torch is not None:
        import safetensors.torch
        tensors = {}
        for name, value in arrays.items():
            t = torch.from_numpy(value.copy())
            tensors[name] = t.view(torch.bfloat16) if name in bf16 else t
        return safetensors.torch.save(tensors, metadata=metadata)
    # Without torch: write the bit patterns as U16 and relabel them BF16 in the header. The data
    # section is unchanged; only the header (JSON, padded with spaces to 8 bytes) is rewritten.
    data = safetensors.numpy.save(arrays, metadata=metadata)
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    for name in bf16:
        header[name]["dtype"] = "BF16"
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size:]
