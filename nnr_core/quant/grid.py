"""Tensors that already lie on an NNC quantization grid (CABAC §9.1, CABAC §9.2): the QP whose uniform
reconstruction fl32(Δ)·fl32(level) gives every value back exactly, so that a model decoded from NNC
(or quantized to power-of-two-like steps) is coded again without a further loss."""
import math
from typing import Optional

import numpy as np

from nnr_core.quant.reconstruct import step_size_f32

MAX_OCTAVES = 24         # steps down to 2^-24 of the smallest magnitude (float32 levels stay exact)
SAMPLE = 4096
LEVEL_LIMIT = 1 << 24    # float32 holds every integer below it exactly


def _exact(w: np.ndarray, delta32: np.float32) -> bool:
    levels = np.rint(w.astype(np.float64) / float(delta32))
    if levels.size and np.abs(levels).max() >= LEVEL_LIMIT:
        return False
    return bool(np.array_equal(levels.astype(np.float32) * delta32, w))


def grid_qp(w: np.ndarray, qp_density: int) -> Optional[int]:
    """The coarsest QP (at qp_density) whose reconstruction gives every value of the float32 array
    `w` exactly, with steps no finer than 2^-MAX_OCTAVES of its smallest non-zero magnitude; None
    when there is none (or the tensor is all zeros)."""
    w = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    nonzero = w[w != 0]
    if nonzero.size == 0:
        return None
    smallest = float(np.abs(nonzero).min())
    k = 1 << qp_density
    top = math.floor(math.log2(smallest) * k) + 1
    sample = w[:: max(1, w.size // SAMPLE)]
    for qp in range(top, top - MAX_OCTAVES * k - 1, -1):
        try:
            delta32 = step_size_f32(qp, qp_density)
        except Exception:               # a step outside float32: no grid there
            continue
        if float(delta32) > smallest or float(delta32) == 0.0:
            continue
        if _exact(sample, delta32) and _exact(w, delta32):
            return qp
    return None


def grid_levels(w: np.ndarray, qp: int, qp_density: int) -> np.ndarray:
    """The int32 levels of a tensor that grid_qp accepted at `qp`."""
    delta32 = step_size_f32(qp, qp_density)
    return np.rint(np.asarray(w, np.float64).reshape(-1) / float(delta32)).astype(np.int32)


def uniform_step(w: np.ndarray) -> Optional[np.float32]:
    """The float32 step s of a float32 tensor whose values are all fl32(level)·s for integer levels
    (|level| < 2^24), taken from the smallest gap between its distinct values; None if there is none
    (fewer than two distinct values, or values off that grid)."""
    w = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    values = np.unique(w)
    if values.size < 2:
        return None
    gaps = np.diff(values.astype(np.float64))
    rough = float(gaps.min())                  # one step, up to the float32 rounding of the values
    if not np.isfinite(rough) or rough <= 0:
        return None
    levels = np.rint(w.astype(np.float64) / rough)
    top = int(np.argmax(np.abs(levels)))
    if levels[top] == 0 or abs(levels[top]) >= LEVEL_LIMIT:
        return None
    # the largest level pins the step most precisely; the float32 steps around that quotient are tried
    guess = np.float32(float(w[top]) / levels[top])
    for k in (0, 1, -1, 2, -2):
        step = np.float32(guess + k * np.spacing(guess)) if k else guess
        if step > 0 and np.array_equal(levels.astype(np.float32) * step, w):
            return step
    return None
