"""HDF5 model files (Keras .h5 weights and full-model files): every dataset is a tensor named by
its HDF5 path without the leading '/', e.g. "model_weights/dense/dense/kernel:0".

extras["nodes"] lists the file's objects in iteration order (creation order where the group
tracks it), each a dict with "kind" ("group", "dataset", "empty", "softlink", "extlink",
"hardlink"), "path", "attrs" (name, value, HDF5 dtype) and what is needed to recreate it, so that
saving rebuilds the same hierarchy with the same attributes and storage options around the
restored tensors. nnr_encode carries the same tree in its file meta (nnr.modelio.h5meta).

The file stays inside itself: a dataset whose data lives in other files (external raw storage,
virtual datasets) is refused unless allow_external (then read and written back as an ordinary
dataset); soft and external links are recorded as links, never followed; an object reached by a
second hard link is recorded as a "hardlink" to its first path (so link cycles end). Each
dataset's declared size is drawn from the load's byte budget before it is read, and a dataset
with a size but no stored data at all (never written, which HDF5 would read as fill values) is
refused: a small file cannot declare a huge array. (Compressed chunks may inflate far past their
stored size, legitimately; the budget bounds them.)
"""
from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import option_error, restore, to_codec
from nnr.modelio.guard import Budget, codec_itemsize, head, reading, refuse
from nnr.modelio.model import Model, require

_STORAGE = ("chunks", "compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset")


def _attrs(obj):
    return [(k, obj.attrs[k], obj.attrs.get_id(k).dtype) for k in obj.attrs]


def _track_order(group):
    return bool(group.id.get_create_plist().get_link_creation_order())


def _outside(dataset):
    """What of `dataset`'s data lives outside the file ("external raw storage in FILE", "virtual
    dataset mapping FILE"), or None."""
    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        return f"external raw storage in {plist.get_external(0)[0].decode(errors='replace')!r}"
    if dataset.is_virtual:
        sources = sorted({m.file_name for m in dataset.virtual_sources()})
        return f"a virtual dataset mapping {', '.join(map(repr, sources)) or 'other datasets'}"
    return None


class _Walk:
    """Depth-first, in each group's iteration order, without recursion (deep files) or loops."""

    def __init__(self, h5py, path, options):
        self.h5py, self.path, self.options = h5py, path, options
        self.budget = Budget(path, options.max_bytes)
        self.nodes, self.tensors, self.dtypes, self.seen = [], {}, {}, {}

    def run(self, root):
        self.seen[root.id] = ""
        stack = [("", root, iter(root))]  # pre-order: a group's objects follow it in `nodes`
        while stack:
            prefix, group, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            sub = self._visit(group, name, f"{prefix}{name}")
            if sub is not None:
                stack.append((f"{prefix}{name}/", sub, iter(sub)))

    def _visit(self, group, name, path):
        h5py = self.h5py
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            self.nodes.append({"kind": "softlink", "path": path, "target": link.path})
            return None
        if isinstance(link, h5py.ExternalLink):
            self.nodes.append({"kind": "extlink", "path": path, "filename": link.filename, "target": link.path})
            return None
        if not isinstance(link, h5py.HardLink):
            raise EncoderConfigError(f"{self.path!s}: {path!r} is a user-defined link, which NNR cannot keep")
        obj = group[name]
        if obj.id in self.seen:  # a second hard link to an object already recorded (or an ancestor)
            self.nodes.append({"kind": "hardlink", "path": path, "target": self.seen[obj.id]})
            return None
        self.seen[obj.id] = path
        if isinstance(obj, h5py.Group):
            self.nodes.append({"kind": "group", "path": path, "attrs": _attrs(obj),
                               "track_order": _track_order(obj)})
            return obj
        if isinstance(obj, h5py.Dataset):
            self._dataset(obj, path)
        # named datatypes (h5py.Datatype) carry no weights and are not kept
        return None

    def _dataset(self, obj, path):
        if obj.shape is None:  # an HDF5 null dataspace: no data to code
            self.nodes.append({"kind": "empty", "path": path, "attrs": _attrs(obj), "dtype": obj.dtype})
            return
        outside = _outside(obj)
        if outside and not self.options.allow_external:
            raise option_error(
                "{file}: dataset {name!r} is {outside}: its data lives outside the file, which "
                "nnr reads only with {option}", "allow_external", file=str(self.path), name=path,
                outside=outside)
        storage = {k: getattr(obj, k) for k in _STORAGE if getattr(obj, k) not in (None, False)}
        if obj.maxshape != obj.shape:
            storage["maxshape"] = obj.maxshape
        if outside:  # written back as an ordinary dataset
            storage = {}
        self.nodes.append({"kind": "dataset", "path": path, "attrs": _attrs(obj), "storage": storage})
        if obj.dtype.kind in "OSUVcMm":
            raise EncoderConfigError(f"tensor {path!r} has dtype {obj.dtype} which NNR cannot code")
        self.budget.take(path, obj.shape, codec_itemsize(obj.dtype))
        if not outside and obj.size and obj.id.get_storage_size() == 0:
            # HDF5 allocates late: a dataset that was never written is a shape in a small file
            raise EncoderConfigError(
                f"{self.path!s}: dataset {path!r} declares shape {obj.shape} of {obj.dtype} but the file "
                f"stores none of its data (never written: every element would be the fill value)")
        self.tensors[path], self.dtypes[path] = to_codec(path, obj[()], allow_float64=self.options.allow_float64)


def load(path, options):
    h5py = require("h5py", "reading", "h5")
    start = head(path)
    with reading(path, "HDF5"):
        is_hdf5 = h5py.is_hdf5(path)
    if not is_hdf5:
        raise refuse(path, "an HDF5 file", "the HDF5 signature (\\x89HDF\\r\\n\\x1a\\n)", start)
    with reading(path, "HDF5"), h5py.File(path, "r") as f:
        root = f["/"]
        walk = _Walk(h5py, path, options)
        extras = {"root_attrs": _attrs(root), "track_order": _track_order(root),
                  "userblock_size": f.userblock_size, "nodes": walk.nodes}
        walk.run(root)
    return Model(walk.tensors, walk.dtypes, "h5", extras)


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
    with atomic_output(path, "w+b") as fileobj, reading(path, "HDF5", "write"):
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
                elif kind == "hardlink":
                    f[p] = f[node["target"] or "/"]
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
