"""HDF5 model files (Keras .h5 weights and full-model files): every dataset is a tensor named by
its HDF5 path without the leading '/', e.g. "model_weights/dense/dense/kernel:0".

extras["nodes"] lists the file's objects in iteration order (creation order where the group
tracks it), each a dict with "kind" ("group", "dataset", "empty", "softlink", "extlink"), "path",
"attrs" (name, value, HDF5 dtype) and what is needed to recreate it, so that saving rebuilds the
same hierarchy with the same attributes and storage options around the restored tensors.
"""
from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import restore, to_codec
from nnr.modelio.model import Model, require

_STORAGE = ("chunks", "compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset")


def _attrs(obj):
    return [(k, obj.attrs[k], obj.attrs.get_id(k).dtype) for k in obj.attrs]


def _track_order(group):
    return bool(group.id.get_create_plist().get_link_creation_order())


def _walk(h5py, group, prefix, nodes, tensors, dtypes, allow_float64):
    for name in group:
        path = f"{prefix}{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            nodes.append({"kind": "softlink", "path": path, "target": link.path})
            continue
        if isinstance(link, h5py.ExternalLink):
            nodes.append({"kind": "extlink", "path": path, "filename": link.filename, "target": link.path})
            continue
        obj = group[name]
        if isinstance(obj, h5py.Group):
            nodes.append({"kind": "group", "path": path, "attrs": _attrs(obj),
                          "track_order": _track_order(obj)})
            _walk(h5py, obj, path + "/", nodes, tensors, dtypes, allow_float64)
        elif isinstance(obj, h5py.Dataset):
            if obj.shape is None:  # an HDF5 null dataspace: no data to code
                nodes.append({"kind": "empty", "path": path, "attrs": _attrs(obj), "dtype": obj.dtype})
                continue
            storage = {k: getattr(obj, k) for k in _STORAGE if getattr(obj, k) not in (None, False)}
            if obj.maxshape != obj.shape:
                storage["maxshape"] = obj.maxshape
            nodes.append({"kind": "dataset", "path": path, "attrs": _attrs(obj), "storage": storage})
            if obj.dtype.kind in "OSUVc":
                raise EncoderConfigError(f"tensor {path!r} has dtype {obj.dtype} which NNR cannot code")
            tensors[path], dtypes[path] = to_codec(path, obj[()], allow_float64=allow_float64)
        # named datatypes (h5py.Datatype) carry no weights and are not kept


def load(path, *, allow_pickle=False, allow_float64=False):
    h5py = require("h5py", "reading", "h5")
    tensors, dtypes, nodes = {}, {}, []
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise EncoderConfigError(f"cannot read {path!s} as HDF5: {err}") from err
    with f:
        root = f["/"]
        extras = {"root_attrs": _attrs(root), "track_order": _track_order(root),
                  "userblock_size": f.userblock_size, "nodes": nodes}
        _walk(h5py, root, "", nodes, tensors, dtypes, allow_float64)
    return Model(tensors, dtypes, "h5", extras)


def _set_attrs(obj, attrs):
    for name, value, dtype in attrs:
        obj.attrs.create(name, value, dtype=dtype)


def _write_dataset(group, path, name, array, dtype, storage):
    value = restore(name, array, dtype)  # bfloat16 has no HDF5 type: kept as float32 (exact)
    return group.create_dataset(path, data=value, **storage)


def save(path, model, *, same_kind):
    h5py = require("h5py", "writing", "h5")
    ex = model.extras if same_kind else {}
    written = set()
    with atomic_output(path, "w+b") as fileobj:
        with h5py.File(fileobj, "w", track_order=ex.get("track_order") or None,
                       userblock_size=ex.get("userblock_size") or 0) as f:
            _set_attrs(f, ex.get("root_attrs", ()))
            for node in ex.get("nodes", ()):
                kind, p = node["kind"], node["path"]
                if kind == "group":
                    g = f.create_group(p, track_order=node["track_order"] or None)
                    _set_attrs(g, node["attrs"])
                elif kind == "softlink":
                    f[p] = h5py.SoftLink(node["target"])
                elif kind == "extlink":
                    f[p] = h5py.ExternalLink(node["filename"], node["target"])
                elif kind == "empty":
                    d = f.create_dataset(p, data=h5py.Empty(node["dtype"]))
                    _set_attrs(d, node["attrs"])
                elif kind == "dataset" and p in model.tensors:
                    d = _write_dataset(f, p, p, model.tensors[p], model.dtypes.get(p), node["storage"])
                    _set_attrs(d, node["attrs"])
                    written.add(p)
            for name, array in model.tensors.items():  # tensors the original file did not have
                if name not in written:
                    _write_dataset(f, name, name, array, model.dtypes.get(name), {})
