"""PyTorch model files (torch.save): a state_dict, a checkpoint dict holding one under
"state_dict" / "model_state_dict" / "model", or a whole nn.Module (which needs allow_pickle).
Quantized tensors (per-tensor / per-channel affine) load as their integer representation with dtype
"qint8" / "quint8" / "qint32" and their quantizer in extras["quantized"]; save rebuilds them.

extras:
  layout: "state_dict" (the file is the weights dict), "checkpoint" (a dict holding it under
      extras["key"]) or "module" (an nn.Module).
  checkpoint: the top-level dict with the weights entry set to None, kept for its other entries
      (epoch, optimizer state, ...) and their order.
  module: the nn.Module, when the weights came from one (whole file or checkpoint entry).
  entries: the weights dict's keys in order, tensors and other entries alike; others: its
      non-tensor entries; dict_type: its class (dict or OrderedDict); metadata: its _metadata
      (module versions that load_state_dict reads).
  quantized: {name: quantizer} of the quantized tensors (nnr.modelio.fmt_pt.quantizer).

Before torch sees the file: it must be a zip archive (torch.save) or a legacy pickle, and the
bytes torch.load would allocate (the zip members' declared sizes, or the legacy file's size) are
drawn from the load's byte budget, as are the tensors' codec-side sizes before they are converted
(many tensors viewing one storage count once each). torch itself checks each storage record's
size against the tensor metadata.
"""
import copy
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from nnr.errors import EncoderConfigError, ResourceLimitError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import QUANTIZED_DTYPES, option_error, restore, to_codec
from nnr.modelio.guard import Budget, head, one_line, reading, refuse, zip_or_refuse
from nnr.modelio.model import Model, require

_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model")


def _torch_load(torch, path, allow_pickle):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if not allow_pickle:
            if needs:
                raise option_error(
                    "{path} holds pickled Python objects ({found}), not only tensors and "
                    "plain containers; torch.load(weights_only=True) refuses them because unpickling "
                    "runs code from the file (a whole nn.Module saved with torch.save is one such "
                    "file). Pass {option} only if you trust the file, or save its "
                    "state_dict() instead", "allow_pickle", path=str(path), found=needs.group(1)) from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.S)
            raise EncoderConfigError(
                f"cannot read {path!s} with torch.load(weights_only=True): "
                f"{' '.join((detail.group(1) if detail else text).split())[:300]}") from None
    except MemoryError as err:
        raise ResourceLimitError(f"{path!s}: out of memory reading it as a PyTorch file") from err
    except Exception as err:  # a forged file makes the unpickler raise anything (KeyError, ...)
        raise EncoderConfigError(f"cannot read {path!s} as a PyTorch file: {one_line(err)}") from err
    with reading(path, "a PyTorch file"):  # arbitrary unpickling can raise anything
        return torch.load(path, map_location="cpu", weights_only=False)


def _precheck(path, budget):
    """Refuse what is not a torch.save file; count what torch.load would allocate."""
    start = head(path, 512)
    if zipfile.is_zipfile(path) or start.startswith(b"PK\x03\x04"):
        zip_or_refuse(path, "a PyTorch file", "a zip archive (torch.save)", start)
        with reading(path, "a PyTorch zip archive"), zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                budget.take_bytes(info.filename, info.file_size,
                                  what=f"zip member {info.filename!r} (uncompressed)")
    elif start[:1] == b"\x80" or start[257:262] == b"ustar":  # a legacy pickle, or the older tar
        budget.take_bytes(os.fspath(path), os.path.getsize(path), what="the legacy (pickle) file")
    else:
        raise refuse(path, "a PyTorch file", "a zip archive (torch.save) or a legacy pickle", start[:64])


def _has_tensor(torch, mapping):
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def quantizer(torch, name, t) -> dict:
    """The affine quantizer of a quantized tensor as JSON-able numbers (exact: floats round-trip)."""
    scheme = t.qscheme()
    dtype = str(t.dtype).replace("torch.", "")
    if scheme == torch.per_tensor_affine:
        return {"qscheme": "per_tensor_affine", "dtype": dtype, "scale": float(t.q_scale()),
                "zero_point": int(t.q_zero_point())}
    if scheme == torch.per_channel_affine:
        return {"qscheme": "per_channel_affine", "dtype": dtype, "axis": int(t.q_per_channel_axis()),
                "scale": [float(v) for v in t.q_per_channel_scales().tolist()],
                "zero_point": [int(v) for v in t.q_per_channel_zero_points().tolist()]}
    raise EncoderConfigError(f"tensor {name!r} is quantized with {scheme}; NNR carries per-tensor and "
                             "per-channel affine quantized tensors")


def quantized_tensor(torch, name, levels, q):
    """The torch quantized tensor of integer representation `levels` and quantizer `q`."""
    ints = torch.from_numpy(np.ascontiguousarray(levels))
    try:
        if q["qscheme"] == "per_tensor_affine":
            return torch._make_per_tensor_quantized_tensor(ints, q["scale"], q["zero_point"])
        return torch._make_per_channel_quantized_tensor(
            ints, torch.tensor(q["scale"], dtype=torch.float64), torch.tensor(q["zero_point"], dtype=torch.int64),
            q["axis"])
    except (RuntimeError, TypeError, IndexError) as err:
        raise EncoderConfigError(f"tensor {name!r}: cannot rebuild the quantized tensor: {one_line(err)}") from None


def _packed_members(torch, value):
    """{<name>.<i>: tensor} of a tuple of tensors (and Nones), as quantized Linear layers keep their
    packed weight and bias in the state_dict; None for anything else."""
    if not isinstance(value, tuple) or not any(isinstance(v, torch.Tensor) for v in value) \
            or not all(v is None or isinstance(v, torch.Tensor) for v in value):
        return None
    return {i: v for i, v in enumerate(value) if v is not None}


def plain_value(torch, value):
    """A non-tensor state_dict entry as JSON for the file meta ({"torch_dtype": name} or {"value": v}),
    or None when it is not one of those simple kinds."""
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    return None


def from_plain(torch, name, entry):
    """The entry plain_value described."""
    if "torch_dtype" in entry:
        dtype = getattr(torch, entry["torch_dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise EncoderConfigError(f"entry {name!r}: {entry['torch_dtype']!r} is not a torch dtype")
        return dtype
    return entry["value"]


def _to_numpy(torch, name, t, allow_float64):
    if t.is_quantized and t.layout == torch.strided and t.device.type != "meta":
        q = quantizer(torch, name, t)
        if q["dtype"] not in QUANTIZED_DTYPES:
            raise EncoderConfigError(f"tensor {name!r} has dtype torch.{q['dtype']} which NNR cannot code")
        return t.detach().cpu().int_repr().numpy(), q["dtype"]
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise EncoderConfigError(f"tensor {name!r} is {t.layout}/{t.dtype} on {t.device}; "
                                 f"NNR codes dense tensors only")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.float().numpy(), "bfloat16"
    try:
        value = t.numpy()
    except (TypeError, RuntimeError) as err:
        raise EncoderConfigError(f"tensor {name!r} has dtype {t.dtype} which NNR cannot code") from err
    return to_codec(name, value, allow_float64=allow_float64)


def load(path, options):
    torch = require("torch", "reading", "pt")
    _precheck(path, Budget(path, options.max_bytes))
    obj = _torch_load(torch, path, options.allow_pickle)
    allow_float64 = options.allow_float64
    extras = {"layout": None, "key": None, "checkpoint": None, "module": None}
    weights = obj
    if isinstance(obj, torch.nn.Module):
        extras["layout"], extras["module"] = "module", obj
        weights = obj.state_dict()
    elif isinstance(obj, Mapping):
        key = next((k for k in _WEIGHT_KEYS if k in obj and (
            isinstance(obj[k], torch.nn.Module)
            or (isinstance(obj[k], Mapping) and _has_tensor(torch, obj[k])))), None)
        if key is not None:
            weights = obj[key]
            extras["layout"], extras["key"] = "checkpoint", key
            top = type(obj) if isinstance(obj, dict) else dict
            extras["checkpoint"] = top((k, None if k == key else v) for k, v in obj.items())
            if isinstance(weights, torch.nn.Module):
                extras["module"] = weights
                weights = weights.state_dict()
        elif _has_tensor(torch, obj):
            extras["layout"] = "state_dict"
    if extras["layout"] is None:
        raise EncoderConfigError(
            f"{path!s} holds no tensors NNR can find: expected a state_dict (a dict of tensors), a "
            f"checkpoint dict with one under {', '.join(map(repr, _WEIGHT_KEYS))}, or an nn.Module; "
            f"got {type(obj).__name__}")
    tensors, dtypes, others = {}, {}, {}
    budget = Budget(path, options.max_bytes)
    flat, packed = {}, {}            # tensors by name (a packed tuple's members as <name>.<i>)
    for name, value in weights.items():
        members = _packed_members(torch, value)
        if isinstance(value, torch.Tensor) or members is not None:
            if not isinstance(name, str):
                raise EncoderConfigError(f"{path!s}: a tensor is stored under the key {name!r} "
                                         f"({type(name).__name__}); NNR names tensors by strings")
            subs = {name: value} if members is None else {f"{name}.{i}": t for i, t in members.items()}
            if members is not None:
                packed[name] = [f"{name}.{i}" if i in members else None for i in range(len(value))]
            for sub, t in subs.items():
                if sub in flat or (sub != name and sub in weights):
                    raise EncoderConfigError(f"{path!s}: the packed member {sub!r} clashes with another entry")
                dt = t.dtype  # floats reach the codec as float32 (or wider)
                budget.take(sub, t.shape, max(dt.itemsize, 4) if dt.is_floating_point else dt.itemsize)
                flat[sub] = t
        else:
            others[name] = value
    quantized = {}
    for name, value in flat.items():
        tensors[name], dtypes[name] = _to_numpy(torch, name, value, allow_float64)
        if dtypes[name] in QUANTIZED_DTYPES:
            quantized[name] = quantizer(torch, name, value)
    extras.update(entries=list(weights), others=others, dict_type=type(weights),
                  metadata=getattr(weights, "_metadata", None), quantized=quantized, packed=packed)
    return Model(tensors, dtypes, "pt", extras)


def _from_numpy(torch, name, array, dtype, q=None):
    value = np.array(restore(name, array, dtype), copy=True, order="C")
    if dtype in QUANTIZED_DTYPES and q is not None:
        return quantized_tensor(torch, name, value, q)
    t = torch.from_numpy(value)
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t


def save(path, model, *, same_kind):
    torch = require("torch", "writing", "pt")
    quantized = (model.extras or {}).get("quantized") or {}
    tensors = {n: _from_numpy(torch, n, a, model.dtypes.get(n), quantized.get(n)) for n, a in model.tensors.items()}
    ex = model.extras if same_kind else {}
    dict_type = ex.get("dict_type") or OrderedDict
    weights = dict_type()
    others = dict(ex.get("others") or {})
    others.update({n: from_plain(torch, n, e) for n, e in (ex.get("values") or {}).items()})
    packed = ex.get("packed") or {}
    used = set()
    for name in ex.get("entries") or ():
        if name in packed and all(sub is None or sub in tensors for sub in packed[name]):
            weights[name] = tuple(None if sub is None else tensors[sub] for sub in packed[name])
            used.update(sub for sub in packed[name] if sub)
        elif name in tensors:
            weights[name] = tensors[name]
        elif name in others:
            weights[name] = others[name]
    for name, t in tensors.items():  # tensors the original file did not have
        if name not in weights and name not in used:
            weights[name] = t
    if ex.get("metadata") is not None:
        weights._metadata = copy.copy(ex["metadata"])
    module = ex.get("module")
    if module is not None:
        module = copy.deepcopy(module)
        try:
            module.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            raise EncoderConfigError(f"the tensors do not fit the saved nn.Module: {err}") from err
        weights = module
    layout = ex.get("layout")
    obj = weights
    if layout == "checkpoint":
        obj = type(ex["checkpoint"])(
            (k, weights if k == ex["key"] else v) for k, v in ex["checkpoint"].items())
    with atomic_output(path) as f:
        torch.save(obj, f)
