"""Encoder input: validation, dtype handling and the reference's parameter classification."""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnr_core.errors import EncoderConfigError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT32_MAX_TEXT = "3.4028235e38"       # np.finfo(np.float32).max


@dataclass
class InputTensor:
    """One tensor as the encoder codes it."""

    name: str
    data: np.ndarray            # float32 or int32, C-contiguous, original shape
    is_int: bool                # coded losslessly as NNR_PT_INT
    is_weight: bool             # W_TYPES in the reference: coded with `qp`, others with `nonweight_qp`
    parameter_id: int           # position in the model's parameter order
    param_type: str = ""        # the reference's parameter type ("weight", "bias", ...), "" if unset
    value_range: Optional[tuple] = None     # (min, max) of a float tensor: the QP's overflow guard


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


def prepare(tensors, framework="generic", param_types=None, indices=None) -> list:
    """Validate and convert the encoder's input; returns InputTensor records in coding order.

    param_types: {name: parameter type} as in the reference's block_id_and_param_type
    ("weight", "bias", "bn.beta", ...); a listed type decides the QP class (only "weight" is
    coded with `qp`, every other type with `nonweight_qp`), overriding the shape-based rule.
    indices: {name: parameter index} where it is not the position in `tensors` (batch-norm folding
    keeps the model's original indices, which become parameter_id)."""
    param_types = param_types or {}
    out = []
    for index, (name, value) in enumerate(as_tensor_dict(tensors).items()):
        if not isinstance(name, str) or not name or "\0" in name:
            raise EncoderConfigError(f"tensor name {name!r} must be a non-empty string without NUL")
        if framework == "pytorch" and ".num_batches_tracked" in name:
            continue      # REF-QUIRK: the reference's PyTorch path drops these, but counts their index
        arr = _to_numpy(name, value)
        t = _convert(name, arr, indices.get(name, index) if indices else index, framework)
        if name in param_types:
            t.param_type = param_types[name]
            t.is_weight = param_types[name] == "weight"
        out.append(t)
    if not out:
        raise EncoderConfigError("nothing to encode: every tensor was skipped")
    return out


def _to_numpy(name, value):
    if hasattr(value, "detach") and hasattr(value, "cpu"):         # a torch tensor, without importing torch
        if getattr(value, "is_quantized", False):
            raise EncoderConfigError(
                f"tensor {name!r} is a quantized torch tensor; pass its int_repr() (coded exactly as "
                "NNR_PT_INT) and keep its scale and zero point, or save the state_dict and use nnr_encode, "
                "which carries them")
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.dtype.name == "bfloat16":   # ml_dtypes, as nnr.modelio
        value = value.astype(np.float32)
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise EncoderConfigError(f"tensor {name!r}: expected a numpy array, got {type(value).__name__}")
    return value


def as_float32(name, arr):
    """(arr as C-contiguous float32, its min, its max). Refuses NaN and infinities, and names a finite
    value beyond float32's range (a float64 1e300, say) as an overflow rather than as the infinity
    the conversion makes of it."""
    with np.errstate(over="ignore"):
        data = np.ascontiguousarray(arr, dtype=np.float32)
    lo, hi = data.min(), data.max()             # NaN and infinities propagate: no per-element test
    if np.isfinite(lo) and np.isfinite(hi):
        return data, float(lo), float(hi)
    bad = int(np.flatnonzero(~np.isfinite(data.reshape(-1)))[0])
    source = arr[np.unravel_index(bad, arr.shape)]
    if np.isfinite(source):
        raise _overflow(name, arr, data)
    raise EncoderConfigError(f"tensor {name!r}: non-finite value {source} at flat index {bad}")


def narrowed_to_float32(name, arr):
    """arr (float64, say) as float32 for a model file's tensor; refuses finite values beyond float32's
    range as as_float32 does (NaN and infinities pass, for the encoder to refuse)."""
    with np.errstate(over="ignore"):
        data = np.asarray(arr).astype(np.float32)
    if data.size and not (np.isfinite(data.min()) and np.isfinite(data.max())) and \
            np.any(np.isinf(data) & np.isfinite(arr)):
        raise _overflow(name, arr, data)
    return data


def _overflow(name, arr, data):
    """The error for the first finite value of arr that became an infinity in its float32 copy data."""
    bad = int(np.flatnonzero((np.isinf(data) & np.isfinite(arr)).reshape(-1))[0])
    source = arr[np.unravel_index(bad, arr.shape)]
    return EncoderConfigError(f"tensor {name!r} ({arr.dtype}): value {source!s} at flat index {bad} overflows "
                              f"float32 (largest finite float32 is {FLOAT32_MAX_TEXT}), which NNC codes")


def as_int32(name, arr):
    """arr as C-contiguous int32 (NNR_PT_INT); values beyond int32 are refused."""
    if arr.dtype.itemsize >= 4 and arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            raise EncoderConfigError(f"tensor {name!r}: integer values {lo}..{hi} do not fit int32, "
                                     "which NNR_PT_INT carries")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _convert(name, arr, index, framework):
    if arr.ndim == 0:
        raise EncoderConfigError(f"tensor {name!r} is 0-dimensional; NNC codes tensors of at least one "
                                 "dimension (reshape it to (1,))")
    if arr.size == 0:
        raise EncoderConfigError(f"tensor {name!r} is empty (shape {arr.shape})")
    kind = arr.dtype.kind
    value_range = None
    if kind in "iub":
        data = as_int32(name, arr)
        is_int = True
    elif kind == "f":
        data, lo, hi = as_float32(name, arr)
        value_range = (lo, hi)
        is_int = False
    else:
        raise EncoderConfigError(f"tensor {name!r}: dtype {arr.dtype} cannot be coded "
                                 "(floating point or integer tensors only)")
    if framework == "pytorch":
        weight = _pytorch_is_weight(name, data.ndim)
    else:
        weight = data.ndim > 1          # the reference's generic model: ndim > 1 is a weight
    return InputTensor(name, data, is_int, weight, index, value_range=value_range)
