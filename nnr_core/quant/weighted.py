"""Importance-weighted rate-distortion quantization (DeepCABAC's weighted RD quantization; an encoder
choice beyond the reference, off by default).

The reference's quantizers (CABAC §9.3 uniform, CABAC §8.3 trellis) pick each level by
distortion·D + rate. Here the distortion of parameter i is multiplied by a weight g_i derived from a
per-parameter importance F_i (a diagonal Fisher estimate, squared gradients, ...) the user supplies:

    g_i = (1 − β) + β · F_i^α / mean(F^α)          (per tensor, so mean g = 1)

β = importance_mix (0..1, default 0.9), α = importance_power (> 0, default 1). The floor 1 − β
matters: squared gradients are extremely heavy-tailed and exactly zero for parameters that do not
move the loss on the calibration data (e.g. the kernel of a channel whose ReLU6 is saturated there).
Weighted by F alone, λ·rate sets those parameters -- whole depthwise kernels -- to zero, and a
zeroed kernel moves its channel out of saturation through the batch norm, a change the local
quadratic model cannot see (EfficientNet-Lite0: one 3x3x144 depthwise tensor quantized that way took
top-1 agreement from 0.96 to 0.29). With the floor, λ grows by at most 1/(1 − β) for any parameter.

The rate and the search are the reference's (same candidates, CABAC bit estimates, same trellis), so
weights that are all 1 give the reference's levels bit for bit, and the stream is an ordinary NNC
stream. A constant importance (any value) is the unweighted problem and gives exactly the default
bytes. Without a rate term (lambda_scale 0) the uniform quantizer keeps the nearest level of every
parameter of weight > 0; the trellis still trades the weighted errors of neighbouring parameters.
"""
import math

import numpy as np

from nnr_core.errors import EncoderConfigError

DEFAULT_MIX = 0.9       # β: distortion weights >= 0.1, i.e. λ at most 10x the reference's
DEFAULT_POWER = 1.0     # α


def check_mix(mix) -> float:
    """β = importance_mix as a float in [0, 1]."""
    if isinstance(mix, bool) or not isinstance(mix, (int, float, np.integer, np.floating)) \
            or not math.isfinite(mix) or not 0.0 <= mix <= 1.0:
        raise EncoderConfigError(f"importance_mix must be a number in [0, 1], not {mix!r}")
    return float(mix)


def check_power(power) -> float:
    """α = importance_power as a float > 0."""
    if isinstance(power, bool) or not isinstance(power, (int, float, np.integer, np.floating)) \
            or not math.isfinite(power) or power <= 0.0:
        raise EncoderConfigError(f"importance_power must be a finite number > 0, not {power!r}")
    return float(power)


def importance_array(name, w, importance) -> np.ndarray:
    """The importance of tensor `name` as flat float64 of w's size, checked (finite, >= 0)."""
    imp = np.asarray(importance)
    n = np.asarray(w).size
    if imp.size != n:
        raise EncoderConfigError(f"importance[{name!r}] has {imp.size} elements, the tensor {n}")
    try:
        imp = imp.astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise EncoderConfigError(f"importance[{name!r}] must be numeric, not {imp.dtype}") from None
    if not np.all(np.isfinite(imp)) or np.any(imp < 0):
        raise EncoderConfigError(f"importance[{name!r}] must be finite and >= 0")
    return imp


def check_importance(name, w, importance) -> np.ndarray:
    """The importance of tensor `name` as flat float64 of w's size, normalised to mean 1."""
    imp = importance_array(name, w, importance)
    mean = float(imp.mean()) if imp.size else 0.0
    if not mean > 0.0:
        raise EncoderConfigError(f"importance[{name!r}] is all zero")
    return imp / mean


def distortion_weights(name, w, importance, mix=DEFAULT_MIX, power=DEFAULT_POWER):
    """g = (1 − β) + β·F^α/mean(F^α) for tensor `name`; None when all g are 1 (the reference)."""
    imp = check_importance(name, w, importance)
    mix, power = check_mix(mix), check_power(power)
    if mix == 0.0 or imp.size == 0 or np.all(imp == imp[0]):
        return None
    if power != 1.0:
        imp = imp ** power
        imp /= imp.mean()
    return (1.0 - mix) + mix * imp


PIN = 1e12     # the distortion weight of a parameter pinned at 0: no rate term outweighs it


def pinned_zeros(w, weights=None) -> np.ndarray:
    """Distortion weights (unit weights if None) with PIN where w is exactly 0, so that neither
    quantizer codes a zero parameter as +-Delta: the trellis (dependent quantization) otherwise does
    where the next parameters' states gain from it (sparsified tensors keep their zeros)."""
    flat = np.asarray(w).reshape(-1)
    out = np.ones(flat.size) if weights is None else np.array(weights, dtype=np.float64)
    out[flat == 0] = PIN
    return out


def quantize_weighted(w, importance, qp, qp_density, *, dq=False, lambda_scale=0.0, name="tensor",
                      rows=None, row_width=None, scan_order=0, cabac_unary_length_minus1=10,
                      mix=DEFAULT_MIX, power=DEFAULT_POWER, pin_zeros=False):
    """Levels (dq=False) or reconstruction indices (dq=True), int32 in w's shape, and the QP used.
    importance None: unit weights. pin_zeros: parameters that are exactly 0 decode as exactly 0."""
    from nnr_core.quant import quantize as q
    weights = None if importance is None else distortion_weights(name, w, importance, mix, power)
    if pin_zeros:
        weights = pinned_zeros(w, weights)
    if dq:
        return q.quantize_tcq(w, qp, qp_density, rows, row_width, scan_order, lambda_scale=lambda_scale,
                              cabac_unary_length_minus1=cabac_unary_length_minus1, importance=weights)
    return q.quantize_uniform(w, qp, qp_density, lambda_scale=lambda_scale, rows=rows, row_width=row_width,
                              scan_order=scan_order, cabac_unary_length_minus1=cabac_unary_length_minus1,
                              importance=weights)

