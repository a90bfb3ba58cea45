"""What nnr_encode records about a model file so that nnr_decode can write it back: original dtypes
and shapes, and the few entries the codec does not code. Carried as JSON in the NNR_TPL unit's
topology_data (empty when nothing needs recording, as the reference writes it)."""
import json

import numpy as np

KEY = "nnr_file_meta"
CODED_DTYPES = {"float32", "int32"}


def build(model, coded: dict, skipped: dict) -> str:
    """JSON for topology_data: per tensor the original dtype/shape where it differs from the coded
    tensor, and the values of small tensors the codec skips (e.g. num_batches_tracked)."""
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
    if not tensors and not extra:
        return ""
    return json.dumps({KEY: {"tensors": tensors, "extra": extra, "order": list(model.dtypes)}},
                      separators=(",", ":"), sort_keys=False)


def parse(topology_data: str):
    """The recorded metadata, or None if topology_data is not ours."""
    if not topology_data or not topology_data.startswith("{"):
        return None
    try:
        meta = json.loads(topology_data)
    except ValueError:
        return None
    return meta.get(KEY) if isinstance(meta, dict) else None


def restore(decoded: dict, meta) -> tuple:
    """(tensors, dtypes) in the original order, shapes and dtype names."""
    tensors, dtypes = {}, {}
    info = meta or {}
    entries = info.get("tensors", {})
    extra = info.get("extra", {})
    order = info.get("order") or list(decoded) + [n for n in extra if n not in decoded]
    for name in order:
        if name in decoded:
            a = decoded[name]
            e = entries.get(name, {})
            if "shape" in e:
                a = a.reshape(e["shape"])
            tensors[name] = a
            # without an entry the file held the coded dtype: float32 (codebook tensors decode
            # to float64 and are rounded back once) or int32
            dtypes[name] = e.get("dtype", "float32" if a.dtype.kind == "f" else "int32")
        elif name in extra:
            e = extra[name]
            tensors[name] = np.array(e["values"]).reshape(e["shape"])
            dtypes[name] = e["dtype"]
    for name in decoded:              # tensors the metadata does not know (should not happen)
        if name not in tensors:
            tensors[name] = decoded[name]
            dtypes[name] = str(decoded[name].dtype)
    return tensors, dtypes
