"""Sparsification of model updates for federated training: top-k per tensor and Sparse Binary
Compression's binarisation (Sattler et al., "Sparse Binary Compression: Towards Distributed Deep
Learning with minimal Communication", IJCNN 2019). Numpy in, numpy out; what a method drops is the
caller's error-feedback residual (nnr.fl.feedback)."""
import math

import numpy as np

from nnr.errors import EncoderConfigError


def check_fraction(fraction, what="fraction") -> float:
    """fraction as a float in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
            or not math.isfinite(fraction) or not 0 < fraction <= 1:
        raise EncoderConfigError(f"{what} must be a number in (0, 1], not {fraction!r}")
    return float(fraction)


def kept_count(size, fraction) -> int:
    """How many entries a tensor of `size` keeps: ceil(fraction * size), at least 1."""
    return min(size, max(1, int(math.ceil(fraction * size))))


def topk_indices(a, k) -> np.ndarray:
    """Flat indices (ascending) of the k largest |a|; ties broken towards the lower index."""
    flat = np.abs(np.asarray(a, dtype=np.float32).reshape(-1))
    if k >= flat.size:
        return np.arange(flat.size, dtype=np.int64)
    # a stable sort of -|a| ranks equal magnitudes by position, so the choice is reproducible
    order = np.argsort(-flat, kind="stable")[:k]
    return np.sort(order).astype(np.int64)


def dense(shape, idx, values) -> np.ndarray:
    """A float32 array of `shape`, zero but at the flat indices idx, which hold `values` (an array
    or one value for all)."""
    out = np.zeros(math.prod(shape), np.float32)
    out[idx] = values
    return out.reshape(shape)


def topk(a, fraction) -> np.ndarray:
    """a with all but its kept_count(fraction) largest-magnitude entries set to 0 (float32)."""
    a = np.asarray(a, dtype=np.float32)
    idx = topk_indices(a, kept_count(a.size, check_fraction(fraction)))
    return dense(a.shape, idx, a.reshape(-1)[idx])


def sbc(a, fraction):
    """Sparse Binary Compression of one tensor: of the k = kept_count(fraction) largest positive and
    the k most negative entries, the set with the larger mean magnitude is kept, every kept entry
    set to that set's mean. Returns (flat indices ascending, mean as float32 with its sign)."""
    flat = np.asarray(a, dtype=np.float32).reshape(-1)
    k = kept_count(flat.size, check_fraction(fraction))
    candidates = []
    for idx, sign in ((np.flatnonzero(flat > 0), 1.0), (np.flatnonzero(flat < 0), -1.0)):
        if idx.size > k:
            idx = idx[np.argsort(-sign * flat[idx], kind="stable")[:k]]
        candidates.append(idx)
    return sbc_of(flat, np.concatenate(candidates))


def sbc_dense(a, fraction) -> np.ndarray:
    """The tensor SBC sends, as a dense float32 array of a's shape."""
    a = np.asarray(a, dtype=np.float32)
    return dense(a.shape, *sbc(a, fraction))


def global_threshold(tensors, fraction) -> float:
    """The magnitude of the kept_count(fraction)-th largest entry over all tensors together: a global
    top-k keeps every entry at least this large (ties may keep a few more)."""
    mags = np.concatenate([np.abs(np.asarray(a, dtype=np.float32)).reshape(-1) for a in tensors])
    k = kept_count(mags.size, check_fraction(fraction))
    return float(np.partition(mags, mags.size - k)[mags.size - k])


def sbc_of(a, candidates):
    """SBC's choice among the flat indices `candidates` of a: the sign set with the larger mean
    magnitude (ties: the positive set), as (indices ascending, signed float32 mean)."""
    flat = np.asarray(a, dtype=np.float32).reshape(-1)
    cand = np.asarray(candidates, dtype=np.int64)
    sets = []
    for idx in (cand[flat[cand] > 0], cand[flat[cand] < 0]):
        if idx.size:
            sets.append((float(np.mean(np.abs(flat[idx].astype(np.float64)))), idx))
    if not sets:
        return np.zeros(0, np.int64), np.float32(0)
    mean, idx = max(sets, key=lambda s: s[0])          # ties: the positive set, listed first
    return np.sort(idx), np.float32(np.sign(flat[idx[0]]) * mean)
