"""Reconstruction of decoded levels: step size and dequantization (CABAC §9.1, CABAC §9.2)."""
import math

import numpy as np

from nnr_core.errors import SyntaxValueError

QP_DENSITY_MAX = 7


def step_size(qp: int, qp_density: int) -> float:
    """Exact step size Delta = mul * 2^(shift - qp_density) as a Python float (CABAC §9.1)."""
    if not 0 <= qp_density <= QP_DENSITY_MAX:
        raise SyntaxValueError("qp_density out of range", element="qp_density", value=qp_density,
                               allowed="0..7")
    k = 1 << qp_density
    mul = k + (qp & (k - 1))
    shift = qp >> qp_density
    try:
        return math.ldexp(mul, shift - qp_density)
    except OverflowError:
        raise SyntaxValueError("quantization step overflows", element="QP", value=qp) from None


def step_size_f32(qp: int, qp_density: int) -> np.float32:
    """The step size rounded once to float32, as the reconstruction uses it (CABAC §9.1)."""
    delta = step_size(qp, qp_density)
    with np.errstate(over="ignore"):
        delta32 = np.float32(delta)
    if not np.isfinite(delta32):
        raise SyntaxValueError("quantization step overflows float32", element="QP", value=qp)
    return delta32


def reconstruct_uniform(levels: np.ndarray, qp: int, qp_density: int, inplace: bool = False) -> np.ndarray:
    """value = fl32(Delta) * fl32(i), evaluated in float32 (CABAC §9.2).

    inplace: `levels` (int32, contiguous) is not needed afterwards; the values are written over
    it (one pass, no second tensor-sized allocation)."""
    delta32 = step_size_f32(qp, qp_density)
    if levels.dtype == np.int32 and levels.flags.c_contiguous:
        from nnr_core.quant._reconstruct import reconstruct_int32
        out = reconstruct_int32(levels, float(delta32), bool(inplace and levels.flags.writeable))
        if out is None:
            raise SyntaxValueError("reconstructed value overflows float32", element="QP", value=qp)
        return out
    with np.errstate(over="ignore"):
        out = levels.astype(np.float32) * delta32
    if not np.all(np.isfinite(out)):
        raise SyntaxValueError("reconstructed value overflows float32", element="QP", value=qp)
    return out


def reconstruct_codebook(symbols: np.ndarray, codebook, cb_zero_offset: int, qp: int,
                         qp_density: int, dtype=np.float64) -> np.ndarray:
    """value = Codebook[k + CbZeroOffset] * Delta, the exact product rounded once to `dtype`
    (CABAC §9.2).

    REF-QUIRK: NNCodec outputs codebook tensors in float64; float64 holds the exact product for
    codebook entries below 2^44, so it is the default here too.
    """
    big = next((int(v) for v in codebook if not -(1 << 44) < int(v) < 1 << 44), None)
    if big is not None:                 # checked on the integers: beyond int64 they overflow numpy
        raise SyntaxValueError("codebook entry too large for exact reconstruction", element="codebook",
                               value=big, allowed=f"|entry| < {1 << 44}")
    cb = np.asarray(codebook, dtype=np.int64)
    index = symbols.astype(np.int64) + cb_zero_offset
    if index.size and (index.min() < 0 or index.max() >= cb.size):
        bad = int(index[(index < 0) | (index >= cb.size)][0]) - cb_zero_offset
        raise SyntaxValueError("codebook symbol outside the codebook", element="level", value=bad,
                               allowed=f"{-cb_zero_offset}..{cb.size - 1 - cb_zero_offset}")
    delta = step_size(qp, qp_density)
    with np.errstate(over="ignore"):
        out = (cb[index].astype(np.float64) * delta).astype(dtype)
    if not np.all(np.isfinite(out)):
        raise SyntaxValueError("reconstructed value overflows", element="QP", value=qp)
    return out
