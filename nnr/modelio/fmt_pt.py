"""PyTorch model files (torch.save): a state_dict, a checkpoint dict holding one under
"state_dict" / "model_state_dict" / "model", or a whole nn.Module (which needs allow_pickle).

extras:
  layout: "state_dict" (the file is the weights dict), "checkpoint" (a dict holding it under
      extras["key"]) or "module" (an nn.Module).
  checkpoint: the top-level dict with the weights entry set to None, kept for its other entries
      (epoch, optimizer state, ...) and their order.
  module: the nn.Module, when the weights came from one (whole file or checkpoint entry).
  entries: the weights dict's keys in order, tensors and other entries alike; others: its
      non-tensor entries; dict_type: its class (dict or OrderedDict); metadata: its _metadata
      (module versions that load_state_dict reads).
"""
import copy
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import restore, to_codec
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
                raise EncoderConfigError(
                    f"{path!s} holds pickled Python objects ({needs.group(1)}), not only tensors and "
                    f"plain containers; torch.load(weights_only=True) refuses them because unpickling "
                    f"runs code from the file (a whole nn.Module saved with torch.save is one such "
                    f"file). Pass allow_pickle=True only if you trust the file, or save its "
                    f"state_dict() instead") from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.S)
            raise EncoderConfigError(
                f"cannot read {path!s} with torch.load(weights_only=True): "
                f"{(detail.group(1) if detail else text).strip()}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise EncoderConfigError(f"cannot read {path!s} as a PyTorch file: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # arbitrary unpickling can raise anything
        raise EncoderConfigError(f"cannot read {path!s} as a PyTorch file: {type(err).__name__}: {err}") from err


def _has_tensor(torch, mapping):
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def _to_numpy(torch, name, t, allow_float64):
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


def load(path, *, allow_pickle=False, allow_float64=False):
    torch = require("torch", "reading", "pt")
    obj = _torch_load(torch, path, allow_pickle)
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
    for name, value in weights.items():
        if isinstance(value, torch.Tensor):
            tensors[name], dtypes[name] = _to_numpy(torch, name, value, allow_float64)
        else:
            others[name] = value
    extras.update(entries=list(weights), others=others, dict_type=type(weights),
                  metadata=getattr(weights, "_metadata", None))
    return Model(tensors, dtypes, "pt", extras)


def _from_numpy(torch, name, array, dtype):
    value = np.array(restore(name, array, dtype), copy=True, order="C")
    t = torch.from_numpy(value)
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t


def save(path, model, *, same_kind):
    torch = require("torch", "writing", "pt")
    tensors = {n: _from_numpy(torch, n, a, model.dtypes.get(n)) for n, a in model.tensors.items()}
    ex = model.extras if same_kind else {}
    dict_type = ex.get("dict_type") or OrderedDict
    weights = dict_type()
    others = ex.get("others") or {}
    for name in ex.get("entries") or ():
        if name in tensors:
            weights[name] = tensors[name]
        elif name in others:
            weights[name] = others[name]
    for name, t in tensors.items():  # tensors the original file did not have
        if name not in weights:
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
