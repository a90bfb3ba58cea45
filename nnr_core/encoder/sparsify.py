"""Pruning masks for one tensor and the selection helpers behind a model-wide budget (an encoder
choice beyond the reference: the standard codes whatever levels it is given, and zeros are level 0).

Saliency, the loss increase of zeroing parameter i under a diagonal quadratic model (Optimal Brain
Damage): ½·F_i·w_i², with F_i a per-parameter importance (diagonal Fisher, Gauss-Newton, squared
gradients); without importance F = 1, i.e. magnitude pruning (w² orders as |w|). The ½ is dropped.
As in importance-weighted quantization (nnr_core/quant/weighted.py), F is floored per tensor,
F' = (1 − β)·mean(F) + β·F with β = importance_mix (default 0.9): squared gradients are exactly zero
for parameters the calibration data does not move, and OBD would zero those first whatever their
size. Measured on a digits CNN (README, "Sparsification"), β = 0.9 kept more accuracy than β = 1
from 50 % sparsity on (at 30 % β = 1 was as accurate and coded smaller). The floor keeps F's units,
so saliencies of different tensors stay comparable.

Structured pruning zeroes whole rows of the [Rows, RowWidth] matrix the coder sees (CABAC §7:
axis 0, the output channels of a convolution or the output features of a linear layer), which row
skipping (CABAC §7.3, row_skip_list) then codes with one bin per row. A row's saliency is the
mean of F·w² over the row (the sum divided by RowWidth: loss increase per parameter removed, which
is what a parameter budget shared between tensors of different row widths needs).

Masks are bool arrays of the tensor's shape, True where the parameter is kept. Exactly
k = round(fraction · n) parameters (rows) are zeroed; ties in saliency are broken by index, lower
index zeroed first (C order; for the model-wide helpers, tensor order first), so a mask is a
function of its input alone. Everything is vectorised: selection by np.partition, O(n); rows of
different widths sharing one budget are sorted (O(R log R) in the number of rows).
"""
import math

import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core.quant.weighted import DEFAULT_MIX, check_mix

__all__ = ["DEFAULT_MIX", "check_fraction", "floored_importance", "count", "saliency", "lowest", "lowest_sized",
           "rows_to_mask", "prune_mask"]


def check_fraction(fraction, what="sparsity") -> float:
    """fraction as a float in [0, 1)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
            or not math.isfinite(fraction) or not 0.0 <= fraction < 1.0:
        raise EncoderConfigError(f"{what} must be a number in [0, 1), not {fraction!r}")
    return float(fraction)


def floored_importance(name, w, importance, mix=DEFAULT_MIX) -> np.ndarray:
    """The importance of tensor `name` as float64 of w's shape, floored: (1 − mix)·mean(F) + mix·F."""
    mix = check_mix(mix)
    imp = np.asarray(importance)
    if imp.shape != np.shape(w):
        raise EncoderConfigError(f"importance[{name!r}] has shape {imp.shape}, the tensor {np.shape(w)}")
    if imp.dtype.kind not in "iuf":
        raise EncoderConfigError(f"importance[{name!r}] must be real numbers, not {imp.dtype}")
    imp = imp.astype(np.float64)
    if not np.all(np.isfinite(imp)):
        raise EncoderConfigError(f"importance[{name!r}] has non-finite values")
    if imp.size and float(imp.min()) < 0.0:
        raise EncoderConfigError(f"importance[{name!r}] has negative values (min {float(imp.min())!r})")
    if mix != 1.0 and imp.size:
        imp = (1.0 - mix) * float(imp.mean()) + mix * imp
    return imp


def count(fraction, n) -> int:
    """How many of n items a fraction zeroes: round(fraction · n), halves rounded up."""
    return min(n, int(math.floor(fraction * n + 0.5)))


def saliency(w, importance=None, *, structured=False, name="tensor") -> np.ndarray:
    """F·w² per parameter (flat, float64), or with structured=True the mean over each row (Rows,).

    importance: None (F = 1) or an array already checked by floored_importance."""
    w = np.asarray(w)
    if structured and w.ndim < 2:
        raise EncoderConfigError(f"tensor {name!r} has {w.ndim} dimension(s); structured pruning zeroes "
                                 "rows of tensors with at least two")
    s = np.square(w, dtype=np.float64)
    if importance is not None:
        s *= importance
    s = s.reshape(-1)
    if structured:
        s = s.reshape(w.shape[0], -1).mean(axis=1)
    return s


def lowest(scores, k) -> np.ndarray:
    """Bool mask of the k lowest scores (ties: lower index first); O(n) by np.partition."""
    scores = np.asarray(scores).reshape(-1)
    n = scores.size
    if k <= 0 or k >= n:
        return np.full(n, k > 0, dtype=bool)
    t = np.partition(scores, k - 1)[k - 1]          # the k-th smallest
    out = scores < t
    need = k - int(np.count_nonzero(out))
    out[np.flatnonzero(scores == t)[:need]] = True
    return out


def lowest_sized(scores, sizes, k) -> np.ndarray:
    """Bool mask of the lowest-scoring items (ties: lower index first) whose total size is nearest k.

    Items are taken in score order; the prefix whose size sum is closest to k wins (on a tie, the
    smaller one). For rows of different widths sharing one parameter budget."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    out = np.zeros(scores.size, dtype=bool)
    if k <= 0 or scores.size == 0:
        return out
    order = np.lexsort((np.arange(scores.size), scores))
    cum = np.cumsum(sizes[order])
    m = int(np.searchsorted(cum, k))                 # cum[m] >= k: prefix of m + 1 items
    if m >= cum.size:
        take = cum.size
    else:
        under = cum[m - 1] if m > 0 else 0
        take = m if k - under <= cum[m] - k else m + 1
    out[order[:take]] = True
    return out


def rows_to_mask(shape, zeroed_rows) -> np.ndarray:
    """The element mask (True = kept) of a tensor whose rows `zeroed_rows` (bool, Rows) are zeroed."""
    keep = ~np.asarray(zeroed_rows, dtype=bool)
    return np.broadcast_to(keep.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def prune_mask(w, fraction, *, importance=None, structured=False, importance_mix=DEFAULT_MIX,
               name="tensor") -> np.ndarray:
    """Keep-mask (bool, w's shape) zeroing round(fraction · n) least salient parameters, or with
    structured=True round(fraction · Rows) least salient rows."""
    fraction = check_fraction(fraction)
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise EncoderConfigError(f"tensor {name!r}: only floating-point tensors are pruned, not {w.dtype}")
    if not np.all(np.isfinite(w)):
        raise EncoderConfigError(f"tensor {name!r} has non-finite values")
    imp = None if importance is None else floored_importance(name, w, importance, importance_mix)
    s = saliency(w, imp, structured=structured, name=name)
    zeroed = lowest(s, count(fraction, s.size))
    if structured:
        return rows_to_mask(w.shape, zeroed)
    return ~zeroed.reshape(w.shape)
