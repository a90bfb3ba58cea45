"""What nnr_encode records about a model file so that nnr_decode can write it back: original dtypes
and shapes, the few entries the codec does not code, and an HDF5 file's tree. Carried as JSON in
the NNR_TPL unit's topology_data (empty when nothing needs recording, as the reference writes it).
Not part of ISO/IEC 15938-17; the format, one JSON object with one key:

    {"nnr_file_meta": {
        "tensors": {NAME: {"dtype": DTYPE, "shape": [int, ...]}, ...},
        "extra":   {NAME: {"dtype": DTYPE, "shape": [int, ...], "values": [number, ...]}, ...},
        "order":   [NAME, ...],
        "h5":      {...},
        "bnf":     {"block_identifier": {NAME: ID}, "parameter_type": {NAME: TYPE}},
        "quantized": {NAME: {"qscheme": Q, "dtype": DTYPE, "scale": S, "zero_point": Z, "axis": A}}}}

tensors: per coded tensor, its original dtype (left out when it is the coded float32 / int32) and
    shape (left out when it is the coded shape), only for tensors where one of them differs.
extra: tensors the codec does not code (PyTorch's num_batches_tracked), with their values
    (flattened; at most MAX_EXTRA_VALUES in all).
order: every tensor's name, coded and extra, in the file's order.
h5: an HDF5 file's groups, attributes, links and storage options (nnr.modelio.h5meta documents
    it); present only when the file has any of them.
scaled: {NAME: STEP}: float tensors on a uniform grid of a step that is no NNC step (--detect-grid),
    coded as their integer levels; the values are fl32(level)·fl32(STEP).
bnf: the blocks whose batch norms nnr_encode --bnf folded (their members before folding, ID a
    string): nnr_decode unfolds them (nnr.bnf.unfold_bn) so the file has the model's tensors again.
quantized: PyTorch quantized tensors, coded as their integer representation (NNR_PT_INT, exact):
    Q per_tensor_affine (S a number, Z an int) or per_channel_affine (S and Z lists along axis A);
    nnr_decode writes the quantized tensor back to a .pt file (other formats get the integers).
DTYPE is one of nnr.modelio.dtypes' names (float32, float16, bfloat16, float64, int8 ... uint64,
bool).

A crafted stream can put anything there, so everything is checked before it is used: text that is
not a JSON object with that key is not ours and is ignored (the decoded tensors are written with
their coded dtypes), but JSON that starts as ours and is malformed, and every value of the wrong
type, shape or size, raises SyntaxValueError (or ConstraintViolationError where it contradicts the
decoded tensors) naming element topology_data.
"""
import json
import math

import numpy as np

from nnr.errors import ConstraintViolationError, SyntaxValueError

KEY = "nnr_file_meta"
CODED_DTYPES = {"float32", "int32"}
ELEMENT = "topology_data"
MAX_EXTRA_VALUES = 1 << 20
MAX_DIMS = 64              # numpy's own limit
_DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool", "qint8", "quint8", "qint32")
_QSCHEMES = ("per_tensor_affine", "per_channel_affine")
MAX_QUANTIZER_VALUES = 1 << 20


def build(model, coded: dict, skipped: dict, bnf=None, scaled=None) -> str:
    """JSON for topology_data: per tensor the original dtype/shape where it differs from the coded
    tensor, the values of small tensors the codec skips (e.g. num_batches_tracked), an HDF5 file's
    tree and the folded blocks (`bnf`: a block_id_and_param_type of their members)."""
    tensors = {}
    for name, dtype in model.dtypes.items():
        entry = {}
        if name in coded:
            if dtype not in CODED_DTYPES or str(coded[name].dtype) != dtype:
                entry["dtype"] = dtype
            orig_shape = list(model.tensors[name].shape)
            if list(coded[name].shape) != orig_shape:
                entry["shape"] = orig_shape
        if entry:
            tensors[name] = entry
    extra = {name: {"dtype": model.dtypes[name], "shape": list(a.shape), "values": a.reshape(-1).tolist()}
             for name, a in skipped.items()}
    h5 = None
    if model.fmt == "h5":
        import h5py

        from nnr.modelio import h5meta
        h5 = h5meta.to_json(h5py, model.extras, model.tensors)
    quantized = (model.extras or {}).get("quantized") if model.fmt == "pt" else None
    torch_meta = _torch_meta(model)
    if not tensors and not extra and not h5 and not bnf and not quantized and not torch_meta and not scaled:
        return ""
    meta = {"tensors": tensors, "extra": extra, "order": list(model.dtypes)}
    if h5:
        meta["h5"] = h5
    if bnf:
        meta["bnf"] = bnf
    if quantized:
        meta["quantized"] = quantized
    if torch_meta:
        meta["torch"] = torch_meta
    if scaled:
        meta["scaled"] = scaled
    return json.dumps({KEY: meta}, separators=(",", ":"), sort_keys=False)


def _torch_meta(model):
    """A .pt state_dict's packed tuples and simple non-tensor entries, with its key order; {} when
    it has neither."""
    ex = model.extras or {}
    if model.fmt != "pt":
        return {}
    values = {}
    if ex.get("others"):
        from nnr.modelio.fmt_pt import plain_value
        from nnr.modelio.model import require
        torch = require("torch", "reading", "pt")
        values = {n: e for n, e in ((n, plain_value(torch, v)) for n, v in ex["others"].items()) if e is not None}
    if not ex.get("packed") and not values and not ex.get("quantized"):
        return {}
    out = {"entries": [n for n in ex.get("entries", ()) if isinstance(n, str)],
           "packed": ex.get("packed") or {}, "values": values}
    # module versions (load_state_dict reads them: quantized layers change their keys by version)
    metadata = ex.get("metadata")
    if metadata and all(isinstance(k, str) and isinstance(v, dict) and all(
            isinstance(a, str) and (b is None or isinstance(b, (int, str))) for a, b in v.items())
            for k, v in metadata.items()):
        out["metadata"] = {k: dict(v) for k, v in metadata.items()}
    return out


def _check_torch(t):
    _object(t, "torch", ("entries", "packed", "values", "metadata"))
    metadata = t.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(v, dict) and all(b is None or isinstance(b, (int, str)) for b in v.values())
            for v in metadata.values()):
        raise _bad("torch.metadata is not an object of objects of ints and strings")
    if not isinstance(t.get("entries", []), list) or not all(isinstance(n, str) for n in t.get("entries", [])):
        raise _bad("torch.entries is not a list of names")
    packed = t.get("packed", {})
    if not isinstance(packed, dict) or not all(
            isinstance(v, list) and len(v) <= MAX_DIMS and all(x is None or isinstance(x, str) for x in v)
            for v in packed.values()):
        raise _bad("torch.packed is not an object of lists of names")
    values = t.get("values", {})
    if not isinstance(values, dict):
        raise _bad("torch.values is not an object")
    for name, e in values.items():
        _object(e, f"torch.values[{name[:60]!r}]", ("torch_dtype", "value"))
        if len(e) != 1 or ("torch_dtype" in e and not isinstance(e["torch_dtype"], str)) or (
                "value" in e and not (e["value"] is None or isinstance(e["value"], (bool, int, float, str)))):
            raise _bad(f"torch.values[{name[:60]!r}] is not one torch_dtype or one JSON scalar")


def _metadata(m):
    """A state_dict's _metadata (an OrderedDict of module versions) from the file meta."""
    from collections import OrderedDict
    return OrderedDict((k, dict(v)) for k, v in m.items()) if m else None


def _bad(message, cls=SyntaxValueError, value=None):
    return cls(f"file meta: {message}", element=ELEMENT, value=value)


def _name(value, what):
    if not isinstance(value, str):
        raise _bad(f"{what} {str(value)[:60]} is not a string")
    return value


def _shape(value, what):
    if (not isinstance(value, list) or len(value) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)):
        raise _bad(f"{what}: shape {str(value)[:80]} is not a list of at most {MAX_DIMS} non-negative ints")
    return value


def _dtype(value, what):
    if value not in _DTYPES:
        raise _bad(f"{what}: unknown dtype {str(value)[:40]!r}; expected one of {', '.join(_DTYPES)}")
    return value


def _object(value, what, keys):
    if not isinstance(value, dict):
        raise _bad(f"{what} is a JSON {type(value).__name__}, not an object")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise _bad(f"{what} has the unknown key {str(unknown[0])[:40]!r}")
    return value


def _check(info):
    """`info` (the value under KEY) with every entry's type checked; raises SyntaxValueError."""
    _object(info, KEY, ("tensors", "extra", "order", "h5", "bnf", "quantized", "torch", "scaled"))
    scaled = info.get("scaled", {})
    if not isinstance(scaled, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in scaled.values()):
        raise _bad("scaled is not an object of positive finite steps")
    _check_quantized(info.get("quantized", {}))
    if "torch" in info:
        _check_torch(info["torch"])
    if "bnf" in info:
        _object(info["bnf"], "bnf", ("block_identifier", "parameter_type"))
        for key in ("block_identifier", "parameter_type"):
            table = info["bnf"].get(key)
            if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                raise _bad(f"bnf.{key} is not an object of strings")
    tensors = info.get("tensors", {})
    if not isinstance(tensors, dict):
        raise _bad("tensors is not an object")
    for name, e in tensors.items():
        _object(e, f"tensors[{name[:60]!r}]", ("dtype", "shape"))
        if "dtype" in e:
            _dtype(e["dtype"], f"tensor {name[:60]!r}")
        if "shape" in e:
            _shape(e["shape"], f"tensor {name[:60]!r}")
    extra = info.get("extra", {})
    if not isinstance(extra, dict):
        raise _bad("extra is not an object")
    count = 0
    for name, e in extra.items():
        what = f"extra tensor {name[:60]!r}"
        _object(e, what, ("dtype", "shape", "values"))
        _dtype(e.get("dtype"), what)
        shape = _shape(e.get("shape"), what)
        values = e.get("values")
        if not isinstance(values, list) or len(values) != math.prod(shape):
            raise _bad(f"{what}: values are not a list of {math.prod(shape)} numbers (shape {shape})")
        count += len(values)
        if count > MAX_EXTRA_VALUES:
            raise _bad(f"more than {MAX_EXTRA_VALUES} values of extra tensors")
        if not all(isinstance(v, (int, float)) for v in values):
            raise _bad(f"{what}: values hold something other than numbers")
    order = info.get("order", [])
    if not isinstance(order, list):
        raise _bad("order is not a list")
    for name in order:
        _name(name, "a name in order")
    if len(set(order)) != len(order):
        raise _bad("order names a tensor twice")
    return info


def _check_quantized(quantized):
    if not isinstance(quantized, dict):
        raise _bad("quantized is not an object")
    count = 0
    for name, q in quantized.items():
        what = f"quantized[{name[:60]!r}]"
        _object(q, what, ("qscheme", "dtype", "scale", "zero_point", "axis"))
        if q.get("qscheme") not in _QSCHEMES or q.get("dtype") not in ("qint8", "quint8", "qint32"):
            raise _bad(f"{what}: qscheme {str(q.get('qscheme'))[:40]!r} / dtype {str(q.get('dtype'))[:20]!r} "
                       f"is not one of {_QSCHEMES} / qint8, quint8, qint32")
        scale, zero = q.get("scale"), q.get("zero_point")
        if q["qscheme"] == "per_tensor_affine":
            ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and isinstance(zero, int)
        else:
            axis = q.get("axis")
            ok = (isinstance(axis, int) and 0 <= axis < MAX_DIMS and isinstance(scale, list)
                  and isinstance(zero, list) and len(scale) == len(zero)
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in zero))
            count += len(scale) if isinstance(scale, list) else 0
        if not ok or count > MAX_QUANTIZER_VALUES:
            raise _bad(f"{what}: scale / zero_point / axis do not describe a {q['qscheme']} quantizer")


def parse(topology_data: str):
    """The recorded metadata (checked), or None if topology_data is not ours."""
    if not topology_data or not topology_data.startswith("{"):
        return None
    try:
        meta = json.loads(topology_data)
    except (ValueError, RecursionError) as err:
        if topology_data.startswith('{"' + KEY + '"'):
            raise _bad(f"not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None
        return None
    if not isinstance(meta, dict) or KEY not in meta:
        return None
    return _check(meta[KEY])


def _values(name, e):
    """An extra tensor's array, its values checked against its dtype."""
    try:
        leaves = np.array(e["values"])
    except (ValueError, OverflowError):
        raise _bad(f"extra tensor {name[:60]!r}: values are not numbers") from None
    if leaves.size and leaves.dtype.kind not in "biuf":
        raise _bad(f"extra tensor {name[:60]!r}: values are not numbers of one kind")
    return leaves.reshape(e["shape"])


def restore(decoded: dict, meta) -> tuple:
    """(tensors, dtypes) in the original order, shapes and dtype names. `meta` comes from parse;
    names and shapes that contradict the decoded tensors raise ConstraintViolationError."""
    tensors, dtypes = {}, {}
    info = meta or {}
    for name, step in info.get("scaled", {}).items():      # integer levels of a uniform grid -> values
        if name not in decoded or decoded[name].dtype.kind not in "iu":
            raise _bad(f"scaled tensor {name[:60]!r} is not a decoded integer tensor", ConstraintViolationError)
        decoded = {**decoded, name: decoded[name].astype(np.float32) * np.float32(step)}
    if "bnf" in info:
        from nnr.bnf import unfold_bn
        from nnr.errors import EncoderConfigError
        option = {"block_identifier": {}, "parameter_type": {}, **info["bnf"]}
        try:
            decoded = unfold_bn(decoded, option)
        except EncoderConfigError as err:
            raise _bad(f"bnf: {err}", ConstraintViolationError) from None
    entries = info.get("tensors", {})
    extra = info.get("extra", {})
    for name in entries:
        if name not in decoded:
            raise _bad(f"tensor {name[:60]!r} is recorded but not decoded", ConstraintViolationError)
    for name in extra:
        if name in decoded:
            raise _bad(f"extra tensor {name[:60]!r} is also a decoded tensor", ConstraintViolationError)
    order = info.get("order") or list(decoded) + [n for n in extra if n not in decoded]
    for name in order:
        if name in decoded:
            a = decoded[name]
            e = entries.get(name, {})
            if "shape" in e:
                if math.prod(e["shape"]) != a.size:
                    raise _bad(f"tensor {name[:60]!r}: recorded shape {e['shape']} does not hold the "
                               f"{a.size} decoded elements", ConstraintViolationError)
                a = a.reshape(e["shape"])
            tensors[name] = a
            # without an entry the file held the coded dtype: float32 (codebook tensors decode
            # to float64 and are rounded back once) or int32
            dtypes[name] = e.get("dtype", "float32" if a.dtype.kind == "f" else "int32")
            if (dtypes[name][0] == "f" or dtypes[name] == "bfloat16") != (a.dtype.kind == "f"):
                raise _bad(f"tensor {name[:60]!r}: recorded dtype {dtypes[name]} but decoded "
                           f"{a.dtype}", ConstraintViolationError)
        elif name in extra:
            e = extra[name]
            tensors[name] = _values(name, e)
            dtypes[name] = e["dtype"]
        else:
            raise _bad(f"order names {name[:60]!r}, which is neither decoded nor recorded",
                       ConstraintViolationError)
    for name in decoded:              # tensors the metadata does not know (should not happen)
        if name not in tensors:
            tensors[name] = decoded[name]
            dtypes[name] = str(decoded[name].dtype)
    return tensors, dtypes


def to_model(decoded: dict, meta, fmt):
    """The Model nnr_decode writes as `fmt`: restore()'s tensors and dtypes, plus the HDF5 tree
    when the file was HDF5 and is written as HDF5 (in another format only the tensors are kept,
    and the tree is not looked at)."""
    from nnr.modelio import Model
    tensors, dtypes = restore(decoded, meta)
    if meta and (meta.get("quantized") or meta.get("torch")) and fmt == "pt":
        t = meta.get("torch") or {}
        return Model(tensors, dtypes, "pt", {"quantized": meta.get("quantized") or {}, "entries": t.get("entries"),
                                             "packed": t.get("packed"), "values": t.get("values"),
                                             "metadata": _metadata(t.get("metadata"))})
    if meta and "h5" in meta and fmt == "h5":
        from nnr.modelio import h5meta
        from nnr.modelio.model import require
        extras = h5meta.from_json(require("h5py", "writing", "h5"), meta["h5"], tensors)
        return Model(tensors, dtypes, "h5", extras)
    return Model(tensors, dtypes, fmt)
