"""Encoder input: validation, dtype handling and the reference's parameter classification."""
from dataclasses import dataclass

import numpy as np

from nnr.errors import EncoderConfigError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass
class InputTensor:
    """One tensor as the encoder codes it."""

    name: str
    data: np.ndarray            # float32 or int32, C-contiguous, original shape
    is_int: bool                # coded losslessly as NNR_PT_INT
    is_weight: bool             # W_TYPES in the reference: coded with `qp`, others with `nonweight_qp`
    parameter_id: int           # position in the model's parameter order
    param_type: str = ""        # the reference's parameter type ("weight", "bias", ...), "" if unset


def _pytorch_is_weight(name, ndim):
    """The reference's PyTorch-model parameter types: ndim > 1, or a 1-D '.weight' that is not a
    batch-norm gamma, counts as a weight (REF-QUIRK: so a BatchNorm weight is coded with qp)."""
    if ndim > 1:
        return True
    if ndim == 1 and not any(s in name for s in (".bias", ".running_mean", ".running_var", ".weight_scaling", "gamma")):
        return ".weight" in name
    return False


def as_tensor_dict(tensors) -> dict:
    """A dict of arrays from a dict or a single array (named "0", as the reference's tensor API)."""
    if isinstance(tensors, dict):
        if not tensors:
            raise EncoderConfigError("nothing to encode: the tensor dict is empty")
        return tensors
    if hasattr(tensors, "shape") and hasattr(tensors, "dtype"):
        return {"0": tensors}
    raise EncoderConfigError(f"tensors must be a dict of arrays or one array, not {type(tensors).__name__}")


def prepare(tensors, framework="generic", param_types=None) -> list:
    """Validate and convert the encoder's input; returns InputTensor records in coding order.

    param_types: {name: parameter type} as in the reference's block_id_and_param_type
    ("weight", "bias", "bn.beta", ...); a listed type decides the QP class (only "weight" is
    coded with `qp`, every other type with `nonweight_qp`), overriding the shape-based rule."""
    param_types = param_types or {}
    out = []
    for index, (name, value) in enumerate(as_tensor_dict(tensors).items()):
        if not isinstance(name, str) or not name or "\0" in name:
            raise EncoderConfigError(f"tensor name {name!r} must be a non-empty string without NUL")
        if framework == "pytorch" and ".num_batches_tracked" in name:
            continue      # REF-QUIRK: the reference's PyTorch path drops these, but counts their index
        arr = _to_numpy(name, value)
        t = _convert(name, arr, index, framework)
        if name in param_types:
            t.param_type = param_types[name]
            t.is_weight = param_types[name] == "weight"
        out.append(t)
    if not out:
        raise EncoderConfigError("nothing to encode: every tensor was skipped")
    return out


def _to_numpy(name, value):
    if hasattr(value, "detach") and hasattr(value, "cpu"):         # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise EncoderConfigError(f"tensor {name!r}: expected a numpy array, got {type(value).__name__}")
    return value


def _convert(name, arr, index, framework):
    if arr.ndim == 0:
        raise EncoderConfigError(f"tensor {name!r} is 0-dimensional; NNC codes tensors of at least one "
                                 "dimension (reshape it to (1,))")
    if arr.size == 0:
        raise EncoderConfigError(f"tensor {name!r} is empty (shape {arr.shape})")
    kind = arr.dtype.kind
    if kind in "iub":
        if arr.dtype.itemsize > 4 or (kind == "u" and arr.dtype.itemsize == 4):
            lo, hi = int(arr.min()), int(arr.max())
            if lo < INT32_MIN or hi > INT32_MAX:
                raise EncoderConfigError(f"tensor {name!r}: integer values {lo}..{hi} do not fit int32, "
                                         "which NNR_PT_INT carries")
        data = np.ascontiguousarray(arr, dtype=np.int32)
        is_int = True
    elif kind == "f":
        data = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            bad = np.flatnonzero(~np.isfinite(data.reshape(-1)))[0]
            raise EncoderConfigError(f"tensor {name!r}: non-finite value {data.reshape(-1)[bad]} at flat index {bad}")
        is_int = False
    else:
        raise EncoderConfigError(f"tensor {name!r}: dtype {arr.dtype} cannot be coded "
                                 "(floating point or integer tensors only)")
    if framework == "pytorch":
        weight = _pytorch_is_weight(name, data.ndim)
    else:
        weight = data.ndim > 1          # the reference's generic model: ndim > 1 is a weight
    return InputTensor(name, data, is_int, weight, index)
