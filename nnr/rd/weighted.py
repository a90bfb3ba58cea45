"""Importance-weighted rate-distortion quantization (DeepCABAC's weighted RD quantization; an encoder
choice beyond the reference, off by default).

Per parameter i with importance F_i (a diagonal Fisher estimate, squared gradients, ...) the level
q_i minimises   F_i·(t_i − q_i)² + λ·R(q_i),   t_i = w_i / Δ,
so important parameters are kept close and unimportant ones are pushed to cheap levels (mostly 0).
The importance of each tensor is normalised to mean 1, so λ keeps the meaning it has for the
reference's rate-term quantizer (NNC-CABAC-QUANT.md §9.3: λ = fl32(lambda_scale)·ln2/6 in units of
Δ² per bit; lambda_scale is the encoder's option).

R(q) is a static model of the tensor's own levels -- −log2 of the (smoothed) relative frequency of
|q| plus one sign bit -- re-estimated over a few passes (entropy-constrained scalar quantization),
vectorised in numpy. It stands in for the CABAC estimate of the reference's quantizer: the entropy
coder that writes the levels is unchanged, so the stream is an ordinary NNC stream.

Scope: the uniform quantizer (dq_flag 0). The trellis (dq) is not implemented weighted: asking for
both raises EncoderConfigError. A constant importance is the unweighted problem; it is handed to
the reference's quantizer unchanged, so it gives exactly the default bytes. With lambda_scale 0
there is no rate term: every parameter takes its nearest level (the reference's result) except
parameters of importance 0, which take level 0.
"""
import math

import numpy as np

from nnr.errors import EncoderConfigError

PASSES = 4          # rate-model re-estimations; the levels settle after two or three


def check_importance(name, w, importance) -> np.ndarray:
    """The importance of tensor `name` as float64 of w's size, normalised to mean 1."""
    imp = np.asarray(importance, dtype=np.float64)
    if imp.size != np.asarray(w).size:
        raise EncoderConfigError(f"importance[{name!r}] has {imp.size} elements, the tensor {np.asarray(w).size}")
    imp = imp.reshape(-1)
    if not np.all(np.isfinite(imp)) or np.any(imp < 0):
        raise EncoderConfigError(f"importance[{name!r}] must be finite and >= 0")
    mean = float(imp.mean()) if imp.size else 0.0
    if mean <= 0.0:
        raise EncoderConfigError(f"importance[{name!r}] is all zero")
    return imp / mean


def _rate_bits(abs_levels, kmax):
    """Static bits of |q| = 0..kmax (+1 sign bit for q ≠ 0) from the levels' own histogram."""
    counts = np.bincount(np.minimum(abs_levels, kmax), minlength=kmax + 1).astype(np.float64)
    p = (counts + 0.5) / (counts.sum() + 0.5 * (kmax + 1))
    bits = -np.log2(p)
    bits[1:] += 1.0
    return bits


def quantize_weighted(w, importance, qp, qp_density, *, dq=False, lambda_scale=0.0, name="tensor",
                      rows=None, row_width=None, scan_order=0, cabac_unary_length_minus1=10):
    """Levels (int32, w's shape) and the QP used, minimising importance-weighted error + λ·rate."""
    from nnr_core.quant import quantize as q
    if dq:
        raise EncoderConfigError(f"importance-weighted quantization of {name!r} is implemented for the uniform "
                                 "quantizer only: encode with dq=False")
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    imp = check_importance(name, w32, importance)
    levels, qp = q.quantize_uniform(w32, qp, qp_density, lambda_scale=lambda_scale, rows=rows, row_width=row_width,
                                    scan_order=scan_order, cabac_unary_length_minus1=cabac_unary_length_minus1)
    if imp.size == 0 or np.all(imp == 1.0):
        return levels, qp           # the unweighted problem: the reference's quantizer, bit for bit
    lam = float(np.float32(lambda_scale)) * math.log(2.0) / 6.0
    flat = levels.reshape(-1).astype(np.int64)
    if lam <= 0.0:
        flat[imp == 0.0] = 0
        return flat.astype(np.int32).reshape(w32.shape), qp
    # plain reference levels (and so the overflow guard's QP) are the starting point
    delta = float(q._qstep32(qp, qp_density))
    t = np.abs(w32.reshape(-1).astype(np.float64)) / delta
    sign = np.where(w32.reshape(-1) < 0, -1, 1)
    lo = np.floor(t).astype(np.int64)
    cands = np.stack([np.zeros_like(lo), np.maximum(lo, 1), lo + 1])     # 0, ⌊t⌋ (≥ 1), ⌈t⌉
    dist = imp[None, :] * (t[None, :] - cands) ** 2
    abs_q = np.abs(flat)
    kmax = int(cands.max()) + 1
    for _ in range(PASSES):
        bits = _rate_bits(abs_q, kmax)
        cost = dist + lam * bits[np.minimum(cands, kmax)]
        new = cands[np.argmin(cost, axis=0), np.arange(t.size)]   # ties: the earlier (cheaper) candidate
        if np.array_equal(new, abs_q):
            break
        abs_q = new
    out = (sign * abs_q).astype(np.int32)
    return out.reshape(w32.shape), qp


def weighted_sse(tensors, decoded, importance) -> float:
    """Σ_t Σ_i F_i (w_i − w'_i)² over the tensors that have an importance (normalised per tensor)."""
    total = 0.0
    for name, imp in importance.items():
        a = np.asarray(tensors[name], dtype=np.float64).reshape(-1)
        b = np.asarray(decoded[name], dtype=np.float64).reshape(-1)
        total += float(check_importance(name, a, imp) @ ((a - b) ** 2))
    return total
