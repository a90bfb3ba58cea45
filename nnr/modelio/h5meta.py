"""The HDF5 tree of a model file (fmt_h5's extras) as JSON for nnr_encode's file meta, and back.

Only what the tensors alone do not rebuild is recorded: attributes (of the root, groups and
datasets), groups that are empty or carry attributes or track creation order, datasets with
attributes or storage options, null-dataspace datasets and links. A group that only holds other
objects is recreated by them; a dataset that has nothing but its data is one of the tensors.

    {"root": [ATTR, ...], "order": true, "userblock": 512,
     "nodes": [[INDEX, KIND, PATH, {...}], ...]}

"root", "order" (the root tracks creation order) and "userblock" are left out when empty, false
or 0. INDEX places the node among the recorded nodes and the plain tensors (in the file-meta's
tensor order), so that creation order is kept. KIND and its dict:

    "group"     {"attrs": [ATTR...], "order": true}       (each key left out when empty/false)
    "dataset"   {"attrs": [ATTR...], "storage": {"chunks": [..], "compression": "gzip"|"lzf",
                 "compression_opts": 0..9, "shuffle": true, "fletcher32": true,
                 "scaleoffset": int, "maxshape": [int|null, ...]}}
    "empty"     {"attrs": [ATTR...], "dtype": TYPE}       (an HDF5 null dataspace)
    "softlink"  {"target": "/path"}       "hardlink" {"target": "path"}
    "extlink"   {"file": "name.h5", "target": "/path"}   (recorded as a link, never followed)

ATTR is [name, TYPE, value] for a scalar, [name, TYPE, value, shape] for an array (value nested
lists) and [name, TYPE] for an empty (null dataspace) attribute. TYPE is a numpy dtype string for
numbers ("<f4", "|b1", "<i8", ...: kinds b, i, u, f up to 8 bytes), "str" / "str:ascii" for
variable-length strings (values as JSON strings), "S<n>" / "S<n>:utf-8" for fixed-length byte
strings (values as JSON strings of code points 0-255, one per byte). Attributes of other types
(complex, compound, enum, references, ...) are not carried: a warning names each one.

from_json checks everything it reads (a crafted stream can put anything there) and raises
SyntaxValueError naming element topology_data.
"""
import logging
import math
import re

import numpy as np

from nnr.errors import ConstraintViolationError, SyntaxValueError

log = logging.getLogger("nnr")
ELEMENT = "topology_data"
_NUMERIC = re.compile(r"[<>|=](b1|[iu][1248]|f[248])")
_FIXED = re.compile(r"S([1-9][0-9]{0,5})(:utf-8)?")
_COMPRESSION = {"gzip", "lzf"}
MAX_CHUNKS = 1 << 24        # a forged chunk shape must not make a small tensor take millions of chunks
MAX_USERBLOCK = 1 << 20
MAX_DEPTH = 64              # numpy's own limit on the dimensions of an attribute value


def _bad(message):
    return SyntaxValueError(f"file meta (h5): {message}", element=ELEMENT)


# ------------------------------------------------------------------------------------ encode

def _type_code(h5py, dtype):
    """The TYPE code of an HDF5 attribute dtype, or None if it is not carried."""
    info = h5py.check_string_dtype(dtype)
    if info is not None:
        suffix = "" if info.encoding == "utf-8" else ":ascii"
        if info.length is None:
            return "str" + suffix
        return f"S{info.length}" + ("" if info.encoding == "ascii" else ":utf-8")
    if dtype.metadata or dtype.fields is not None or dtype.subdtype is not None:
        return None                       # enum, compound, array, reference, vlen sequence
    code = dtype.str
    return code if _NUMERIC.fullmatch(code) else None


def _value_json(code, value):
    if code.startswith("S"):  # bytes -> one code point per byte
        if isinstance(value, np.ndarray):
            flat = [bytes(b).decode("latin-1") for b in value.reshape(-1)]
            return np.array(flat, dtype=object).reshape(value.shape).tolist()
        return bytes(value).decode("latin-1")
    if code.startswith("str"):
        def text(x):
            return x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x)
        if isinstance(value, np.ndarray):
            flat = [text(x) for x in value.reshape(-1)]
            return np.array(flat, dtype=object).reshape(value.shape).tolist()
        return text(value)
    return np.asarray(value).tolist()


def _attrs_json(h5py, attrs, where):
    out = []
    for name, value, dtype in attrs:
        code = _type_code(h5py, dtype)
        if code is None:
            log.warning("%s: attribute %r of HDF5 type %s is not carried in the bitstream", where or "/", name, dtype)
            continue
        if isinstance(value, h5py.Empty):
            out.append([name, code])
        elif isinstance(value, np.ndarray) and value.ndim:
            out.append([name, code, _value_json(code, value), list(value.shape)])
        else:
            out.append([name, code, _value_json(code, value)])
    return out


def _storage_json(storage):
    out = {}
    for key, value in storage.items():
        if key == "compression" and value not in _COMPRESSION:
            log.warning("compression %r is not carried in the bitstream (the data is kept)", value)
            continue
        if key == "compression_opts" and storage.get("compression") != "gzip":
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def to_json(h5py, extras, tensors):
    """The JSON-able record of an HDF5 model's extras, or None when it holds nothing to record."""
    nodes, index = [], 0
    items = extras.get("nodes", ())
    for i, node in enumerate(items):
        kind, path = node["kind"], node["path"]
        entry = {}
        if kind == "group":
            if node["attrs"]:
                entry["attrs"] = _attrs_json(h5py, node["attrs"], path)
            if node["track_order"]:
                entry["order"] = True
            holds = i + 1 < len(items) and items[i + 1]["path"].startswith(path + "/")
            if not entry and holds:
                continue                  # recreated by the objects it holds
        elif kind == "dataset":
            if node["path"] not in tensors:
                continue
            if node["attrs"]:
                entry["attrs"] = _attrs_json(h5py, node["attrs"], path)
            storage = _storage_json(node["storage"])
            if storage:
                entry["storage"] = storage
            if not entry:
                index += 1                # a plain tensor: its place is its turn in the tensor order
                continue
        elif kind == "empty":
            code = _type_code(h5py, node["dtype"])
            if code is None:
                log.warning("%s: empty dataset of HDF5 type %s is not carried in the bitstream", path, node["dtype"])
                continue
            entry = {"attrs": _attrs_json(h5py, node["attrs"], path), "dtype": code}
        elif kind in ("softlink", "hardlink"):
            entry = {"target": node["target"]}
        elif kind == "extlink":
            entry = {"file": node["filename"], "target": node["target"]}
        nodes.append([index, kind, path, entry])
        index += 1
    record = {}
    root = _attrs_json(h5py, extras.get("root_attrs", ()), "/")
    if root:
        record["root"] = root
    if extras.get("track_order"):
        record["order"] = True
    if extras.get("userblock_size"):
        record["userblock"] = int(extras["userblock_size"])
    if nodes:
        record["nodes"] = nodes
    return record or None


# ------------------------------------------------------------------------------------ decode

def _path(value, what):
    if (not isinstance(value, str) or not value or len(value) > 4096 or "\0" in value
            or value.startswith("/") or value.endswith("/")
            or any(part in ("", ".", "..") for part in value.split("/"))):
        raise _bad(f"{what} {str(value)[:80]!r} is not an HDF5 path (a/b/c)")
    return value


def _text(value, what):
    if not isinstance(value, str) or len(value) > 4096 or "\0" in value:
        raise _bad(f"{what} {str(value)[:80]!r} is not a string")
    return value


def _shape(value, what):
    if (not isinstance(value, list) or len(value) > MAX_DEPTH
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 62 for d in value)):
        raise _bad(f"{what}: shape {str(value)[:80]} is not a list of non-negative ints")
    return tuple(value)


def _dtype(h5py, code, what):
    """The h5py dtype of a TYPE code."""
    if not isinstance(code, str):
        raise _bad(f"{what}: type {str(code)[:40]!r} is not a string")
    if code in ("str", "str:ascii"):
        return h5py.string_dtype("utf-8" if code == "str" else "ascii")
    fixed = _FIXED.fullmatch(code)
    if fixed:
        return h5py.string_dtype("utf-8" if fixed.group(2) else "ascii", int(fixed.group(1)))
    if _NUMERIC.fullmatch(code):
        return np.dtype(code)
    raise _bad(f"{what}: unknown type {code[:40]!r}")


def _strings(value, shape, what):
    """Nested lists of strings of `shape` -> a flat list of them (checked)."""
    flat = [value]
    for n in shape:
        if not all(isinstance(v, list) and len(v) == n for v in flat):
            raise _bad(f"{what}: the value does not have shape {list(shape)}")
        flat = [x for v in flat for x in v]
    if not all(isinstance(v, str) for v in flat):
        raise _bad(f"{what}: the value holds something other than strings")
    return flat


_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}  # JSON leaves each type accepts


def _value(code, dtype, value, shape, what):
    if math.prod(shape) > 1 << 24:
        raise _bad(f"{what}: shape {list(shape)} is too large for an attribute")
    if code.startswith("str"):
        flat = _strings(value, shape, what)
        if not shape:
            return flat[0]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    if code.startswith("S"):
        try:
            raw = [s.encode("latin-1") for s in _strings(value, shape, what)]
        except UnicodeEncodeError:
            raise _bad(f"{what}: a fixed-length byte string holds a code point above 255") from None
        if any(len(b) > dtype.itemsize for b in raw):
            raise _bad(f"{what}: a string is longer than its type's {dtype.itemsize} bytes")
        arr = np.array(raw, dtype=f"S{dtype.itemsize}").reshape(shape)
        return arr if shape else arr[()]
    try:
        leaves = np.array(value)
        arr = leaves.astype(dtype) if leaves.size else np.zeros(leaves.shape, dtype)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise _bad(f"{what}: value {str(value)[:60]} is not of type {code}") from None
    if shape and not leaves.size and math.prod(shape) == 0 and isinstance(value, list):
        arr = np.zeros(shape, dtype)  # tolist() keeps no inner dimensions of an empty array
    if arr.shape != shape or (leaves.size and leaves.dtype.kind not in _KINDS[dtype.kind]):
        raise _bad(f"{what}: value {str(value)[:60]} is not {list(shape) or 'a scalar'} of type {code}")
    if dtype.kind in "iu" and leaves.size and not np.array_equal(arr, leaves):
        raise _bad(f"{what}: value {str(value)[:60]} does not fit type {code}")
    return arr if shape else arr[()]


def _attrs(h5py, items, where):
    if items is None:
        return []
    if not isinstance(items, list):
        raise _bad(f"attributes of {where!r} are not a list")
    out, names = [], set()
    for item in items:
        if not isinstance(item, list) or not 2 <= len(item) <= 4:
            raise _bad(f"an attribute of {where!r} is not [name, type, value(, shape)]")
        name = _text(item[0], f"an attribute name of {where!r}")
        if name in names:
            raise _bad(f"attribute {name!r} of {where!r} appears twice")
        names.add(name)
        what = f"attribute {name!r} of {where!r}"
        dtype = _dtype(h5py, item[1], what)
        if len(item) == 2:
            out.append((name, h5py.Empty(dtype), dtype))
            continue
        shape = _shape(item[3], what) if len(item) == 4 else ()
        out.append((name, _value(item[1], dtype, item[2], shape, what), dtype))
    return out


def _storage(value, tensor, path):
    if not isinstance(value, dict):
        raise _bad(f"storage of {path!r} is not an object")
    ndim = tensor.ndim
    out = {}
    for key, v in value.items():
        if key in ("chunks", "maxshape"):
            dims = [v2 if v2 is not None else 0 for v2 in v] if key == "maxshape" and isinstance(v, list) else v
            shape = _shape(dims, f"{key} of {path!r}")
            if len(shape) != ndim:
                raise _bad(f"{key} of {path!r} has {len(shape)} dimensions, the tensor {ndim}")
            if key == "chunks":
                if not all(shape) or math.prod(-(-n // c) for n, c in zip(tensor.shape, shape)) > MAX_CHUNKS:
                    raise _bad(f"chunks {list(shape)} of {path!r}: zero, or more than {MAX_CHUNKS} chunks")
                out[key] = shape
            else:
                if any(m is not None and m < n for m, n in zip(v, tensor.shape)):
                    raise _bad(f"maxshape {v} of {path!r} is smaller than the tensor's shape")
                out[key] = tuple(v)
        elif key == "compression" and isinstance(v, str) and v in _COMPRESSION:
            out[key] = v
        elif key == "compression_opts" and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9:
            out[key] = v
        elif key in ("shuffle", "fletcher32") and isinstance(v, bool):
            out[key] = v
        elif key == "scaleoffset" and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64:
            out[key] = v
        else:
            raise _bad(f"storage option {str(key)[:40]}={str(v)[:40]} of {path!r} is not one nnr writes")
    if "compression_opts" in out and out.get("compression") != "gzip":
        raise _bad(f"compression_opts of {path!r} without gzip compression")
    return out


def _node(h5py, item, tensors):
    if not isinstance(item, list) or len(item) != 4 or not isinstance(item[3], dict):
        raise _bad("a node is not [index, kind, path, {...}]")
    index, kind, path, entry = item
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _bad(f"node index {str(index)[:40]} is not a non-negative int")
    path = _path(path, "node path")
    node = {"kind": kind, "path": path}
    if kind == "group":
        node.update(attrs=_attrs(h5py, entry.get("attrs"), path), track_order=entry.get("order") is True)
    elif kind == "dataset":
        if path not in tensors:
            raise ConstraintViolationError(f"file meta (h5): dataset {path!r} is not a decoded tensor",
                                           element=ELEMENT)
        node.update(attrs=_attrs(h5py, entry.get("attrs"), path),
                    storage=_storage(entry.get("storage", {}), tensors[path], path))
    elif kind == "empty":
        node.update(attrs=_attrs(h5py, entry.get("attrs"), path), dtype=_dtype(h5py, entry.get("dtype"), path))
    elif kind == "softlink":
        node["target"] = _text(entry.get("target"), f"softlink target of {path!r}")
    elif kind == "hardlink":
        target = entry.get("target")
        node["target"] = "" if target == "" else _path(target, f"hardlink target of {path!r}")
    elif kind == "extlink":
        node.update(filename=_text(entry.get("file"), f"extlink file of {path!r}"),
                    target=_text(entry.get("target"), f"extlink target of {path!r}"))
    else:
        raise _bad(f"unknown node kind {str(kind)[:40]!r}")
    return index, node


def from_json(h5py, record, tensors):
    """fmt_h5 extras from a record written by to_json; `tensors` are the restored tensors (in the
    file's order). Raises SyntaxValueError / ConstraintViolationError on anything malformed."""
    if not isinstance(record, dict):
        raise _bad("the record is not an object")
    unknown = set(record) - {"root", "order", "userblock", "nodes"}
    if unknown:
        raise _bad(f"unknown key {sorted(unknown)[0][:40]!r}")
    userblock = record.get("userblock", 0)
    if (not isinstance(userblock, int) or isinstance(userblock, bool) or userblock > MAX_USERBLOCK
            or userblock and (userblock < 512 or userblock & (userblock - 1))):
        raise _bad(f"userblock {str(userblock)[:40]} is not 0 or a power of two in [512, {MAX_USERBLOCK}]")
    items = record.get("nodes", [])
    if not isinstance(items, list):
        raise _bad("nodes is not a list")
    placed, paths = {}, set()
    for item in items:
        index, node = _node(h5py, item, tensors)
        if index in placed or (placed and index < max(placed)):
            raise _bad(f"node index {index} is out of order")
        if node["path"] in paths:
            raise _bad(f"node path {node['path']!r} appears twice")
        placed[index] = node
        paths.add(node["path"])
    plain = iter([name for name in tensors if name not in paths])
    nodes, index = [], 0
    while placed:
        node = placed.pop(index, None)
        if node is None:
            name = next(plain, None)
            if name is None:
                raise _bad(f"node index {min(placed)} lies past the file's objects")
            node = {"kind": "dataset", "path": name, "attrs": [], "storage": {}}
        nodes.append(node)
        index += 1
    return {"root_attrs": _attrs(h5py, record.get("root"), "/"), "track_order": record.get("order") is True,
            "userblock_size": userblock, "nodes": nodes}
