"""Sparsification before coding: a sparsity budget over a model's weight tensors, magnitude or
importance (OBD) saliency, unstructured or whole rows, with optional gradual pruning and a user's
fine-tuning callable between steps. The masks come from nnr_core/encoder/sparsify.py, which
defines the saliencies, the importance floor and the deterministic tie-breaking.

The result is a dict of ordinary arrays with zeros: any encoder options code it as a conforming
stream. Only the tensors pruned change: a zeroed output row of a convolution leaves its bias and any
following batch norm as they are, so the channel outputs a constant rather than disappearing; the
saliencies measure exactly that change (the weights zeroed, nothing else), and zeroing the bias
too would add a loss they do not see while saving almost no bits (biases are coded at
nonweight_qp).

scope="global" (the default) ranks the parameters (rows) of all selected tensors together: with
importance by F·w² itself (loss units, comparable between tensors, and unchanged when a layer is
rescaled and the next one scaled back), without it by w² / mean(w²) of its tensor (raw magnitudes of
different layers are not comparable: a function-preserving rescaling of one layer moves the
budget). scope="per-tensor" gives every tensor the same fraction. Measured on a digits CNN
(README, "Sparsification"): importance + global is the most accurate at every sparsity; without
importance, global beats per-tensor unstructured, per-tensor beats global for rows. A tensor
zeroed entirely is logged as a warning.

Coding: zeros are level 0. The uniform quantizer keeps them at 0; the reference's trellis (dq, no
rate term) may code a pruned zero as ±Δ to steer its state, which also keeps such a row from being
skipped. Distortion weights pin them: `nnr.encode(..., importance={n: where(mask, 1, 1e9)},
importance_mix=1.0)` (tests/test_sparsify.py checks both).
"""
import logging

import numpy as np

from nnr.errors import EncoderConfigError
from nnr_core.encoder.sparsify import (DEFAULT_MIX, check_fraction, check_mix, count, floored_importance,
                                       lowest, lowest_sized, rows_to_mask, saliency)

__all__ = ["sparsify", "SCOPES"]

SCOPES = ("global", "per-tensor")
log = logging.getLogger("nnr")


def sparsify(tensors, sparsity, *, structured=False, importance=None, scope="global", names=None,
             exclude=(), importance_mix=DEFAULT_MIX, finetune=None, steps=1):
    """Zero a fraction `sparsity` of the selected tensors' parameters; returns (tensors, masks).

    tensors: {name: array}. Selected: the floating-point tensors of two or more dimensions, or
    `names`, minus `exclude`. importance: {name: array of the tensor's shape} (extra names are
    ignored), saliency F·w² instead of w², F floored at (1 − β)·mean(F) per tensor (β = importance_mix).
    structured: zero whole rows (axis 0). finetune(tensors, masks) -> tensors: called after each of
    `steps` pruning steps (sparsity·j/steps at step j); the masks are applied again to its result.
    Returns new arrays for every tensor (same dtypes) and {name: bool keep-mask} for the selected."""
    sparsity = check_fraction(sparsity)
    _check_options(scope, steps, finetune)
    importance_mix = check_mix(importance_mix)
    work = {}
    for name, value in _as_dict(tensors).items():
        work[name] = np.array(value, copy=True)
    chosen = _select(work, names, exclude, structured)
    imps = _importances(work, chosen, importance, importance_mix)
    masks = None
    for step in range(1, steps + 1):
        fraction = sparsity if step == steps else sparsity * step / steps
        masks = _masks(work, chosen, fraction, structured, imps, scope, masks)
        for name, mask in masks.items():
            work[name] = np.where(mask, work[name], work[name].dtype.type(0))
        if finetune is not None:
            tuned = finetune(dict(work), {n: m.copy() for n, m in masks.items()})
            work = _checked_finetune(tuned, work, masks)
    for name, mask in masks.items():
        if not mask.any():
            log.warning("sparsify: every parameter of tensor %r is zeroed (sparsity %g, scope %s)",
                        name, sparsity, scope)
    return work, masks


def _as_dict(tensors):
    if not isinstance(tensors, dict) or not tensors:
        raise EncoderConfigError("tensors must be a non-empty dict of arrays")
    return tensors


def _check_options(scope, steps, finetune):
    if scope not in SCOPES:
        raise EncoderConfigError(f"scope must be one of {SCOPES}, not {scope!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise EncoderConfigError(f"steps must be an integer >= 1, not {steps!r}")
    if finetune is not None and not callable(finetune):
        raise EncoderConfigError(f"finetune must be callable, not {type(finetune).__name__}")


def _select(work, names, exclude, structured):
    """The tensors to prune, in the dict's order, each checked."""
    names = [names] if isinstance(names, str) else names
    exclude = [exclude] if isinstance(exclude, str) else exclude
    for what, listed in (("names", names or ()), ("exclude", exclude or ())):
        unknown = [n for n in listed if n not in work]
        if unknown:
            raise EncoderConfigError(f"{what}: no tensor named {unknown[0]!r}")
    if names is None:
        chosen = [n for n, a in work.items() if a.dtype.kind == "f" and a.ndim >= 2]
    else:
        listed = set(names)
        chosen = [n for n in work if n in listed]
    excluded = set(exclude or ())
    chosen = [n for n in chosen if n not in excluded]
    if not chosen:
        raise EncoderConfigError("no tensor to sparsify (by default: floating-point tensors of two or "
                                 "more dimensions; see names= and exclude=)")
    for name in chosen:
        a = work[name]
        if a.dtype.kind != "f":
            raise EncoderConfigError(f"tensor {name!r}: only floating-point tensors are pruned, not {a.dtype}")
        if a.ndim == 0 or a.size == 0:
            raise EncoderConfigError(f"tensor {name!r} (shape {a.shape}) has nothing to prune")
        if structured and a.ndim < 2:
            raise EncoderConfigError(f"tensor {name!r} has 1 dimension; structured pruning zeroes rows "
                                     "of tensors with at least two")
        if not np.all(np.isfinite(a)):
            raise EncoderConfigError(f"tensor {name!r} has non-finite values")
    return chosen


def _importances(work, chosen, importance, mix):
    if importance is None:
        return None
    if not isinstance(importance, dict):
        raise EncoderConfigError(f"importance must be a dict of arrays, not {type(importance).__name__}")
    missing = [n for n in chosen if n not in importance]
    if missing:
        raise EncoderConfigError(f"importance has no entry for tensor {missing[0]!r}")
    return {n: floored_importance(n, work[n], importance[n], mix) for n in chosen}


def _masks(work, chosen, fraction, structured, imps, scope, previous):
    """Keep-masks at `fraction`; what `previous` zeroed (None: nothing) stays zeroed, scored below
    everything. The scores of the global scope go straight into one flat array."""
    sizes = [work[n].shape[0] if structured else work[n].size for n in chosen]
    bounds = np.cumsum([0] + sizes)
    flat = np.empty(int(bounds[-1]), dtype=np.float64)
    for name, lo, hi in zip(chosen, bounds[:-1], bounds[1:]):
        s = flat[lo:hi]
        s[...] = saliency(work[name], None if imps is None else imps[name], structured=structured, name=name)
        if scope == "global" and imps is None:
            mean = float(s.mean())
            if mean > 0.0:
                s /= mean
        if previous is not None:
            gone = ~previous[name]
            gone = gone.reshape(gone.shape[0], -1).all(axis=1) if structured else gone.reshape(-1)
            np.copyto(s, -1.0, where=gone)
    if scope == "per-tensor":
        zeroed = [lowest(flat[lo:hi], count(fraction, hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    else:
        if structured:
            widths = np.repeat([work[n].size // work[n].shape[0] for n in chosen], sizes)
            picked = lowest_sized(flat, widths, count(fraction, sum(work[n].size for n in chosen)))
        else:
            picked = lowest(flat, count(fraction, flat.size))
        zeroed = np.split(picked, bounds[1:-1])
    if structured:
        return {n: rows_to_mask(work[n].shape, z) for n, z in zip(chosen, zeroed)}
    return {n: ~z.reshape(work[n].shape) for n, z in zip(chosen, zeroed)}


def _checked_finetune(tuned, work, masks):
    """The finetune callable's result, checked against the tensors it was given, masks re-applied."""
    if not isinstance(tuned, dict):
        raise EncoderConfigError(f"finetune must return a dict of arrays, not {type(tuned).__name__}")
    if set(tuned) != set(work):
        extra = sorted(set(tuned) - set(work))
        missing = sorted(set(work) - set(tuned))
        raise EncoderConfigError(f"finetune returned a dict without tensor {missing[0]!r}" if missing
                                 else f"finetune returned an unknown tensor {extra[0]!r}")
    out = {}
    for name, before in work.items():
        a = np.asarray(tuned[name])
        if a.shape != before.shape or a.dtype != before.dtype:
            raise EncoderConfigError(f"finetune returned tensor {name!r} as {a.dtype} {a.shape}, "
                                     f"not {before.dtype} {before.shape}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise EncoderConfigError(f"finetune returned non-finite values in tensor {name!r}")
        out[name] = np.where(masks[name], a, a.dtype.type(0)) if name in masks else np.array(a, copy=True)
    return out
