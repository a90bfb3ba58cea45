"""Importance-weighted rate-distortion quantization, the user's side: the quantizer and its options
live in the codec (nnr_core/quant/weighted.py, which explains the method; `nnr.encode(...,
importance={name: array})` uses it); here is the distortion they minimise, as a metric."""
import numpy as np

from nnr_core.quant.weighted import (DEFAULT_MIX, DEFAULT_POWER, check_importance, check_mix, check_power,
                                     distortion_weights, quantize_weighted)

__all__ = ["DEFAULT_MIX", "DEFAULT_POWER", "check_importance", "check_mix", "check_power", "distortion_weights",
           "quantize_weighted", "weighted_sse"]


def weighted_sse(tensors, decoded, importance) -> float:
    """Σ_t Σ_i F_i (w_i − w'_i)² over the tensors that have an importance (normalised per tensor)."""
    total = 0.0
    for name, imp in importance.items():
        a = np.asarray(tensors[name], dtype=np.float64).reshape(-1)
        b = np.asarray(decoded[name], dtype=np.float64).reshape(-1)
        total += float(check_importance(name, a, imp) @ ((a - b) ** 2))
    return total
