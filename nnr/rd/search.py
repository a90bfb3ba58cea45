"""QP choice per tensor for a target fidelity or a target size (an encoder choice beyond the
reference; CABAC §9.3 says QP selection is not normative).

The result is a `qp_per_tensor` dict that `nnr.encode(..., qp_per_tensor=...)` takes, so the
bitstream stays an ordinary NNC stream; the searches only decide which QP each tensor gets.

* target_psnr: per tensor, the largest (coarsest) integer QP whose PSNR (sweep.py's definition:
  peak = max |w| of the tensor) is at least the target, found by bisection with the real quantizer
  (uniform or trellis, with the encoder's options) and the decoder's reconstruction Δ·i. The
  bisection keeps f(lo) ≥ target > f(hi), so the answer's next coarser QP misses the target.
  A final encode/decode checks every tensor and lowers the QP of any that misses (only possible
  where the encoder and the search could differ, e.g. row skipping with block scans, CABAC §15.2).
* target_bpp: either one global QP (the finest whose bitstream fits the budget, bisection on real
  encodes), or `per_tensor=True`: equal-slope allocation -- each tensor's rate (its own NDU size)
  and squared error are measured on a QP grid, every tensor takes the QP minimising SSE + λ·bits,
  and λ is bisected until the whole bitstream fits.
"""
import math

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.rd.sweep import _db, codable_tensors, tensor_fidelity, unit_sizes
from nnr.rd.weighted import DEFAULT_MIX, DEFAULT_POWER


def _qp_bounds(qp_density, qp_range):
    if qp_range is not None:
        lo, hi = int(min(qp_range)), int(max(qp_range))
    else:
        half = 1 << (5 + qp_density)
        lo, hi = -half, half - 1
    return lo, hi


def _weights(tensors, framework, only_weights):
    from nnr_core.encoder.prepare import prepare
    inputs = prepare(tensors, framework, None)
    return {t.name: t for t in inputs if not t.is_int and (t.is_weight or not only_weights)}


def reconstruct(w, qp, *, qp_density=2, dq=True, scan_order=0, lambda_scale=0.0, cabac_unary_length_minus1=10,
                importance=None, importance_mix=DEFAULT_MIX, importance_power=DEFAULT_POWER):
    """What a decoder reconstructs for tensor w coded at QP `qp` with these options (without entropy
    coding): the encoder's quantizer, then Δ·i (CABAC §9.2). Returns (reconstruction float32, QP used)."""
    from nnr_core.quant import quantize as q
    from nnr_core.quant.reconstruct import reconstruct_uniform
    w = np.asarray(w, dtype=np.float32)
    rows = int(w.shape[0]) if w.ndim else 1
    width = int(w.size // rows) if rows else 1
    scan = scan_order if w.ndim > 1 else 0
    if importance is not None:
        from nnr.rd.weighted import quantize_weighted
        levels, qp = quantize_weighted(w, importance, qp, qp_density, dq=dq, lambda_scale=lambda_scale,
                                       rows=rows, row_width=width, scan_order=scan,
                                       cabac_unary_length_minus1=cabac_unary_length_minus1,
                                       mix=importance_mix, power=importance_power)
    elif dq:
        levels, qp = q.quantize_tcq(w, qp, qp_density, rows, width, scan, lambda_scale=lambda_scale,
                                    cabac_unary_length_minus1=cabac_unary_length_minus1)
    else:
        levels, qp = q.quantize_uniform(w, qp, qp_density, lambda_scale=lambda_scale, rows=rows, row_width=width,
                                        scan_order=scan, cabac_unary_length_minus1=cabac_unary_length_minus1)
    return reconstruct_uniform(np.asarray(levels).reshape(w.shape), int(qp), qp_density), int(qp)


def _psnr_at(w, qp, opts):
    rec, _ = reconstruct(w, qp, **opts)
    sse, _, peak = tensor_fidelity(w, rec)
    return _db(w.size * peak * peak, sse)


def bisect_largest(ok, lo, hi):
    """The largest integer x in [lo, hi] with ok(x), for ok true at small x and false at large x:
    returns x with ok(x) and (x == hi or not ok(x + 1)), or None when ok(lo) is false."""
    if ok(hi):
        return hi
    if not ok(lo):
        return None
    while hi - lo > 1:          # ok(lo) and not ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _quant_opts(options):
    return dict(qp_density=options.get("qp_density", 2), dq=options.get("dq", True),
                scan_order=options.get("scan_order", 0), lambda_scale=options.get("lambda_scale", 0.0),
                cabac_unary_length_minus1=options.get("cabac_unary_length_minus1", 10),
                importance_mix=options.get("importance_mix", DEFAULT_MIX),
                importance_power=options.get("importance_power", DEFAULT_POWER))


def search_target_psnr(tensors, target_psnr, *, qp_range=None, only_weights=True, verify=True, **options) -> dict:
    """{name: QP}: per tensor, the coarsest QP whose PSNR ≥ target_psnr (dB). options: the encoder
    options the stream will be written with (qp_density, dq, scan_order, lambda_scale, ...; also
    `importance` for the weighted quantizer). Tensors already lossless-enough at the coarsest QP get
    that QP; a tensor that misses the target even at the finest QP raises EncoderConfigError."""
    import nnr
    if not isinstance(target_psnr, (int, float)) or not math.isfinite(target_psnr):
        raise EncoderConfigError(f"target_psnr must be a finite number of dB, not {target_psnr!r}")
    tensors = codable_tensors(tensors)
    opts = _quant_opts(options)
    lo, hi = _qp_bounds(opts["qp_density"], qp_range)
    importance = options.get("importance") or {}
    chosen = {}
    for name, t in _weights(tensors, options.get("framework", "generic"), only_weights).items():
        w = t.data
        topts = dict(opts, importance=importance.get(name))
        if not np.any(w):
            chosen[name] = hi
            continue
        qp = bisect_largest(lambda x: _psnr_at(w, x, topts) >= target_psnr, lo, hi)
        if qp is None:
            raise EncoderConfigError(f"tensor {name!r} does not reach {target_psnr} dB even at QP {lo}")
        chosen[name] = qp
    if verify:
        enc_opts = {k: v for k, v in options.items() if k != "qp_per_tensor"}
        for _ in range(8):
            dec = nnr.decode(nnr.encode(tensors, qp_per_tensor=chosen, **enc_opts))
            missed = [n for n in chosen if _db(tensors[n].size * tensor_fidelity(tensors[n], dec[n])[2] ** 2,
                                                tensor_fidelity(tensors[n], dec[n])[0]) < target_psnr]
            if not missed:
                break
            for n in missed:
                chosen[n] -= 1
    return chosen


def search_target_bpp(tensors, target_bpp, *, per_tensor=False, qp_range=None, grid_step=2, **options) -> dict:
    """{name: QP} whose bitstream takes at most target_bpp bits per (floating-point) parameter.
    per_tensor=False: one QP for all weight tensors (the finest that fits); per_tensor=True:
    equal-slope allocation over a QP grid (every grid_step-th QP of qp_range)."""
    import nnr
    if not isinstance(target_bpp, (int, float)) or not target_bpp > 0:
        raise EncoderConfigError(f"target_bpp must be a positive number, not {target_bpp!r}")
    tensors = codable_tensors(tensors)
    params = sum(v.size for v in tensors.values())
    budget = target_bpp * params / 8.0
    enc_opts = {k: v for k, v in options.items() if k not in ("qp_per_tensor", "qp")}
    opts = _quant_opts(options)
    lo, hi = _qp_bounds(opts["qp_density"], qp_range)
    names = list(_weights(tensors, options.get("framework", "generic"), True))

    def size(qps):
        return len(nnr.encode(tensors, qp_per_tensor=qps, **enc_opts))

    if not per_tensor:
        qp = bisect_largest(lambda x: size({n: hi + lo - x for n in names}) <= budget, lo, hi)
        if qp is None:
            raise EncoderConfigError(f"no QP in {lo}..{hi} fits {target_bpp} bits/parameter")
        return {n: hi + lo - qp for n in names}       # bisect_largest over -QP: the finest that fits

    grid = list(range(lo, hi + 1, max(1, int(grid_step))))
    if grid[-1] != hi:
        grid.append(hi)
    table = {}          # name -> [(qp, bits, sse)]
    for qp in grid:
        data = nnr.encode(tensors, qp_per_tensor={n: qp for n in names}, **enc_opts)
        dec = nnr.decode(data)
        sizes = unit_sizes(data)
        for n in names:
            table.setdefault(n, []).append((qp, 8 * sizes[n], tensor_fidelity(tensors[n], dec[n])[0]))

    def allocate(lam):
        return {n: min(rows, key=lambda r: (r[2] + lam * r[1], -r[0]))[0] for n, rows in table.items()}

    if size(allocate(0.0)) <= budget:
        return allocate(0.0)
    lam_hi = 1e-12
    while size(allocate(lam_hi)) > budget:
        lam_hi *= 10.0
        if lam_hi > 1e12:
            raise EncoderConfigError(f"no QP allocation in {lo}..{hi} fits {target_bpp} bits/parameter")
    lam_lo = lam_hi / 10.0 if lam_hi > 1e-12 else 0.0
    for _ in range(30):             # λ bisection on the log scale: the smallest λ that fits
        mid = math.sqrt(lam_lo * lam_hi) if lam_lo > 0 else lam_hi / 2
        if size(allocate(mid)) <= budget:
            lam_hi = mid
        else:
            lam_lo = mid
        if lam_lo > 0 and lam_hi / lam_lo < 1.01:
            break
    return allocate(lam_hi)


def search_target_metric(tensors, metric, required, *, higher_is_better=True, bpp_range=(0.25, 16.0),
                         tolerance=0.02, max_encodes=16, **options):
    """The smallest budget whose stream meets a task metric: bisection on `target_bpp` (nnr.encode's
    rate allocation, with the encoder options given, e.g. `importance`) until the bracket is within
    `tolerance` bits per parameter. metric(decoded tensors {name: ndarray}) -> float must reach
    `required` (at least it, or at most it with higher_is_better=False). Returns (bitstream, bpp,
    metric value) of the smallest budget found that meets it; EncoderConfigError if even the
    largest budget of bpp_range does not."""
    import nnr
    if not callable(metric):
        raise EncoderConfigError("metric must be a callable: metric(decoded tensors) -> float")
    lo, hi = (float(b) for b in bpp_range)
    if not 0 < lo < hi or not math.isfinite(hi):
        raise EncoderConfigError(f"bpp_range must be two increasing positive numbers, not {bpp_range!r}")
    if not isinstance(required, (int, float)) or not math.isfinite(required):
        raise EncoderConfigError(f"required must be a finite number, not {required!r}")

    def meets(value):
        return value >= required if higher_is_better else value <= required

    def trial(bpp):
        data = nnr.encode(tensors, target_bpp=bpp, **options)
        value = float(metric(nnr.decode(data)))
        if not math.isfinite(value):
            raise EncoderConfigError(f"metric returned a non-finite value ({value}) at {bpp:.4g} bits/parameter")
        return data, value

    best = trial(hi)
    if not meets(best[1]):
        raise EncoderConfigError(f"the metric reaches {best[1]:.6g} at {hi} bits/parameter, not {required}: "
                                 "raise bpp_range's upper end")
    best = (best[0], hi, best[1])
    for _ in range(max_encodes - 1):
        if hi - lo <= tolerance:
            break
        mid = 0.5 * (lo + hi)
        data, value = trial(mid)
        if meets(value):
            hi, best = mid, (data, mid, value)
        else:
            lo = mid
    return best
