"""safetensors model files: tensors read one at a time through safe_open; the header metadata
(__metadata__) kept in extras["metadata"] and written back."""
import importlib
import json
import struct

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import bf16_bits_to_f32, f32_to_bf16_bits, restore, to_codec
from nnr.modelio.model import Model, require

_MAX_HEADER = 100_000_000  # the limit the safetensors library itself enforces
# safetensors dtypes numpy reads directly: such tensors are memory-mapped, not read, so a model
# larger than RAM can be encoded tensor by tensor
_NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4",
                 "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


def _read_header(path):
    """The JSON header: {name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}, and the
    offset of the data section. Read directly so that no tensor is materialised for it."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise EncoderConfigError(f"{path!s} is not a safetensors file: shorter than 8 bytes")
        (size,) = struct.unpack("<Q", head)
        if size > _MAX_HEADER:
            raise EncoderConfigError(f"{path!s} is not a safetensors file: header size {size}")
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as err:
        raise EncoderConfigError(f"{path!s} is not a safetensors file: bad header ({err})") from err
    if len(raw) != size or not isinstance(header, dict):
        raise EncoderConfigError(f"{path!s} is not a safetensors file: truncated header")
    return header, 8 + size


def load(path, *, allow_pickle=False, allow_float64=False, mmap=False):
    """mmap: memory-map the tensors numpy can read directly instead of reading them (float32 and
    integer tensors then cost no memory until used: a model larger than RAM can be encoded)."""
    st = require("safetensors", "reading", "safetensors")
    header, data_start = _read_header(path)
    metadata = header.pop("__metadata__", None)
    try:
        # The file's order is the order of the data, which the header's JSON does not keep.
        names = sorted(header, key=lambda n: (tuple(header[n]["data_offsets"]), n))
    except (KeyError, TypeError) as err:
        raise EncoderConfigError(f"{path!s}: malformed safetensors header entry ({err})") from err
    tensors, dtypes = {}, {}
    try:
        with st.safe_open(path, framework="numpy") as f:
            for name in names:
                entry = header[name]
                if entry["dtype"] == "BF16":
                    # numpy has no bfloat16: read the bit patterns (the widening is exact).
                    begin, end = entry["data_offsets"]
                    count = (end - begin) // 2
                    bits = np.fromfile(path, dtype="<u2", count=count, offset=data_start + begin)
                    tensors[name] = bf16_bits_to_f32(bits).reshape(entry["shape"])
                    dtypes[name] = "bfloat16"
                    continue
                value = _mapped(path, data_start, entry) if mmap else None
                try:
                    if value is None:
                        value = f.get_tensor(name)
                except (TypeError, ValueError) as err:
                    raise EncoderConfigError(
                        f"tensor {name!r} in {path!s} has dtype {entry['dtype']} which NNR cannot code") from err
                tensors[name], dtypes[name] = to_codec(name, value, allow_float64=allow_float64)
    except st.SafetensorError as err:
        raise EncoderConfigError(f"cannot read {path!s} as safetensors: {err}") from err
    return Model(tensors, dtypes, "safetensors", {"metadata": metadata})


def _mapped(path, data_start, entry):
    """A read-only memory map of one tensor, or None when the entry is not a plain numpy layout
    (then safetensors reads it, and reports what is wrong)."""
    dtype = _NUMPY_DTYPES.get(entry.get("dtype"))
    try:
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        return None
    if dtype is None or any(d < 0 for d in shape):
        return None
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count == 0 or end - begin != count * np.dtype(dtype).itemsize or begin < 0:
        return None
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
    except (OSError, ValueError):
        return None


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
