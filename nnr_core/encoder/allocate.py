"""Rate allocation for a bit budget: per-tensor QPs at the least (importance-weighted) distortion.

An encoder choice beyond the reference (CABAC §9.3: the choice of QP is not normative); the stream
is an ordinary NNC stream with one QP per tensor.

Distortion of tensor t at QP q: D_t(q) = sum_i s_i (w_i - w'_i)^2, w' what a decoder reconstructs
(the encoder's own quantizer, then Delta * i, CABAC §9.2) and s_i the parameter's sensitivity: the
importance the caller gives (a diagonal Gauss-Newton or Fisher estimate, so that D_t estimates the
loss's increase), or 1 (plain squared error). Rate R_t(q): the bits of the tensor's NDU, header
included, as the encoder writes it. Minimise sum D_t subject to fixed + sum R_t <= budget: every
tensor takes argmin D_t + lambda R_t, lambda bisected (equal slopes).

Cost: each tensor's curve is first estimated every octave of step size on a sample of whole rows
(about SAMPLE_ELEMENTS parameters; small tensors are coded whole, so their points are exact) and
interpolated between octaves; the chosen QPs are then coded exactly, each curve is corrected by
what the exact point measured, and the choice is repeated; a last greedy pass moves single tensors
one QP at a time (each step coded exactly) until the stream fits and is within FILL of the budget.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core.quant.reconstruct import reconstruct_uniform

log = logging.getLogger("nnr")

SAMPLE_ELEMENTS = 4096      # parameters per estimated point of a large tensor
FILL = 0.005                # the promise: the stream ends within 0.5 % below the budget (the fill aims at a
                            # quarter of it, where single steps allow)
MAX_OCTAVES = 40
SMALL_STOP_BITS = 24.0      # bits per parameter to which the curve of a tensor coded whole is measured
_EXACT_ROUNDS = 2           # whole-tensor codings of the chosen QPs: the second corrects the first; more rounds
_MAX_ROUNDS = 6             # (a model each) only while the exact total is still over the budget (they changed
                            # the weighted error by < 0.2 % on a 22.6 M-parameter model)
_FILL_STEPS = 400


def check_target_bpp(target_bpp) -> float:
    """target_bpp as a positive finite float."""
    if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float, np.integer, np.floating)) \
            or not math.isfinite(target_bpp) or not target_bpp > 0:
        raise EncoderConfigError(f"target_bpp must be a positive number of bits per parameter, not {target_bpp!r}")
    return float(target_bpp)


def budget_bytes(inputs, target_bpp) -> int:
    """The stream's size limit: target_bpp bits per floating-point parameter (integer tensors, coded
    losslessly, are not counted among the parameters but their units are inside the budget)."""
    check_target_bpp(target_bpp)
    params = sum(t.data.size for t in inputs if not t.is_int)
    if params == 0:
        raise EncoderConfigError("target_bpp needs at least one floating-point tensor")
    return int(math.floor(target_bpp * params / 8.0))


@dataclass
class _Curve:
    """One allocated tensor: its exact and estimated (bits, distortion) per QP."""

    t: object                       # InputTensor
    sens: Optional[np.ndarray]      # flat float64 sensitivities, or None (all 1)
    sample: object                  # InputTensor coded for the estimates (t itself when small)
    sample_sens: Optional[np.ndarray]
    scale: float                    # parameters of t / parameters of the sample
    top: int                        # a QP at which every level is 0
    est: dict = field(default_factory=dict)       # qp -> (bits, distortion), from the sample
    exact: dict = field(default_factory=dict)     # qp -> (bits, distortion), t coded whole
    qps: Optional[np.ndarray] = None              # candidate QPs, ascending
    bits: Optional[np.ndarray] = None             # their bits (corrected estimates or exact)
    dist: Optional[np.ndarray] = None


def _sample(t, sens):
    """(sample tensor, its sensitivities, scale): evenly spaced whole rows of about SAMPLE_ELEMENTS
    parameters (a single row cut to SAMPLE_ELEMENTS when one row is larger)."""
    from nnr_core.encoder.prepare import InputTensor
    n = t.data.size
    if n <= 2 * SAMPLE_ELEMENTS or t.data.ndim == 0:
        return t, sens, 1.0
    rows = t.data.shape[0]
    width = n // rows
    flat = t.data.reshape(rows, width)
    if width >= SAMPLE_ELEMENTS:
        r = rows // 2
        data = flat[r, :SAMPLE_ELEMENTS].reshape(1, SAMPLE_ELEMENTS)
        s = None if sens is None else sens.reshape(rows, width)[r, :SAMPLE_ELEMENTS]
    else:
        k = max(1, SAMPLE_ELEMENTS // width)
        idx = np.unique(np.linspace(0, rows - 1, k).round().astype(np.int64))
        data = flat[idx].reshape((len(idx),) + t.data.shape[1:])
        s = None if sens is None else sens.reshape(rows, width)[idx].reshape(-1)
    data = np.ascontiguousarray(data, dtype=np.float32)
    vr = (float(data.min()), float(data.max())) if data.size else None
    sample = InputTensor(t.name, data, False, t.is_weight, t.parameter_id, t.param_type, vr)
    return sample, s, n / data.size


class Allocator:
    """Chooses {name: QP} for the weight tensors of one model so that the stream fits a budget."""

    def __init__(self, ndu, sample_ndu, qp_density, qp_limits, pool=None):
        self.ndu = ndu                      # an NduEncoder of the stream's configuration (probe: no state change)
        self.sample_ndu = sample_ndu        # the same without incremental state: a sample has no TCA reference
        self.qp_density = qp_density
        self.lo, self.hi = qp_limits        # QPs the stream can carry
        self.pool = pool
        self.plans = {}                     # name -> {QP: Planned} of the whole-tensor measurements
        self.chosen = {}                    # name -> the Planned of the QP allocate() chose (the encode reuses it)

    # -- measurements ---------------------------------------------------------------------------
    def measure(self, t, sens, qp, ndu=None):
        """(bits of t's NDU, payload-free header bits, distortion, QP used) with t coded at qp
        (the weighted quantizer gets `sens` when the configuration has importance); the whole
        tensor's quantization is kept for the encode that follows."""
        ndu = ndu or self.ndu
        p = ndu.plan(t, int(qp), sens if ndu.cfg.importance else None)
        if ndu is self.ndu:
            self.plans.setdefault(t.name, {})[int(qp)] = p
        parts = ndu.unit_parts(p, 0)
        if parts is None:
            bits = header = 0
        else:
            bits = 8 * len(ndu.write(parts, 0))
            header = bits - 8 * len(parts.payload)
        levels = np.ascontiguousarray(np.asarray(p.levels, dtype=np.int32).reshape(-1))
        d = t.data.reshape(-1).astype(np.float64) - reconstruct_uniform(levels, int(p.qp), self.qp_density)
        dd = d * d
        return bits, header, float(dd @ sens) if sens is not None else float(dd.sum()), int(p.qp)

    def _map(self, fn, items):
        if self.pool is None:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def _estimate(self, c: _Curve, target_bpp):
        """c.est every octave from c.top down, until the sample costs well over the target rate."""
        step = 1 << self.qp_density
        stop_bits = max(2.0 * target_bpp, target_bpp + 6.0)
        if c.scale == 1.0:      # a small tensor (a bias, a batch-norm statistic) may deserve many bits per
            stop_bits = max(stop_bits, SMALL_STOP_BITS)     # parameter, and its points cost little
        qp = min(c.top, self.hi)
        for _ in range(MAX_OCTAVES):
            if qp < self.lo:
                break
            bits, header, dist, _ = self.measure(c.sample, c.sample_sens, qp,
                                                 self.ndu if c.scale == 1.0 else self.sample_ndu)
            est_bits = (bits - header) * c.scale + header
            point = (est_bits, dist * c.scale)
            c.est[qp] = point
            if c.scale == 1.0:
                c.exact[qp] = point
            if (bits - header) / c.sample.data.size > stop_bits:
                break
            qp -= step
        return c

    # -- curves ---------------------------------------------------------------------------------
    def _build(self, c: _Curve):
        """Candidate QPs between the measured octaves, with interpolated bits (linear in QP) and
        distortions (log-linear), corrected by the ratio of exact to estimated at exact points."""
        known = sorted(c.est)
        qps = np.arange(known[0], known[-1] + 1)
        kb = np.array([c.est[q][0] for q in known])
        kd = np.array([c.est[q][1] for q in known])
        bits = np.interp(qps, known, kb)
        floor = max(1e-300, float(kd[kd > 0].min()) * 1e-6) if np.any(kd > 0) else 1e-300
        dist = np.exp(np.interp(qps, known, np.log(np.maximum(kd, floor))))
        dist[dist <= floor * 1.0000001] = 0.0
        ex = sorted(c.exact)
        if ex and c.scale != 1.0:
            # correct the estimates by the exact points (ratios interpolated between them, held beyond)
            est_b = np.interp(ex, qps, bits)
            est_d = np.interp(ex, qps, dist)
            rb = np.array([c.exact[q][0] for q in ex]) / np.maximum(est_b, 1.0)
            rd = np.array([c.exact[q][1] / d if d > 0 else 1.0 for q, d in zip(ex, est_d)])
            bits = bits * np.interp(qps, ex, rb)
            dist = dist * np.interp(qps, ex, rd)
        for q in ex:
            if known[0] <= q <= known[-1]:
                bits[q - known[0]], dist[q - known[0]] = c.exact[q]
        # a finer QP never costs fewer bits nor gives more distortion: enforce monotone curves
        c.qps = qps
        c.bits = np.maximum.accumulate(bits[::-1])[::-1]
        c.dist = np.maximum.accumulate(dist)
        return c

    @staticmethod
    def _choose(curves, lam):
        out = []
        for c in curves:
            cost = c.dist + lam * c.bits
            i = int(np.flatnonzero(cost == cost.min())[-1])       # ties: the coarser QP
            out.append(i)
        return out

    def _solve(self, curves, avail):
        """Indices into each curve's candidates: the smallest lambda whose total bits fit avail."""
        def total(ix):
            return sum(float(c.bits[i]) for c, i in zip(curves, ix))
        ix = self._choose(curves, 0.0)
        if total(ix) <= avail:
            return ix
        lo, hi = 0.0, 1e-30
        while total(self._choose(curves, hi)) > avail:
            lo, hi = hi, hi * 16.0
            if hi > 1e300:
                return [len(c.qps) - 1 for c in curves]
        for _ in range(200):
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 16.0
            if total(self._choose(curves, mid)) <= avail:
                hi = mid
            else:
                lo = mid
            if lo > 0 and hi / lo < 1.0 + 1e-9:
                break
        return self._choose(curves, hi)

    def _exact(self, c: _Curve, qp):
        if qp not in c.exact:
            bits, _, dist, _ = self.measure(c.t, c.sens, qp)
            c.exact[qp] = (bits, dist)
        return c.exact[qp]

    # -- the allocation -------------------------------------------------------------------------
    def allocate(self, tensors, sens, fixed_bits, budget_bits, target_bpp) -> dict:
        """{name: QP} for `tensors` (InputTensors) with sensitivities {name: flat array or None}
        so that fixed_bits + their NDU bits <= budget_bits."""
        curves = []
        for t in tensors:
            s = sens.get(t.name)
            sample, sample_sens, scale = _sample(t, s)
            peak = float(np.max(np.abs(t.data))) if t.data.size else 0.0
            # the QP whose step is at least 4 peak: every level is 0 (CABAC §9.1: Delta >= 2^(qp >> qp_density))
            top = ((math.frexp(peak)[1] + 2) << self.qp_density) if peak > 0 else self.hi
            curves.append(_Curve(t, s, sample, sample_sens, scale, min(top, self.hi)))
        self._map(lambda c: self._estimate(c, target_bpp), curves)
        avail = budget_bits - fixed_bits
        ix = None
        for rnd in range(_MAX_ROUNDS):
            for c in curves:
                self._build(c)
            ix = self._solve(curves, avail)
            todo = [(c, int(c.qps[i])) for c, i in zip(curves, ix) if int(c.qps[i]) not in c.exact]
            if not todo:
                break
            self._map(lambda ci: self._exact(*ci), todo)
            exact = sum(c.exact[int(c.qps[i])][0] for c, i in zip(curves, ix))
            if rnd + 1 >= _EXACT_ROUNDS and exact <= avail:
                break       # fits: the single steps of _fit fill the rest
        qp = {c.t.name: int(c.qps[i]) for c, i in zip(curves, ix)}
        for c in curves:
            self._exact(c, qp[c.t.name])
        self._fit(curves, qp, avail, budget_bits)
        self.chosen = {n: self.plans[n][q] for n, q in qp.items() if q in self.plans.get(n, {})}
        self.plans = {}
        return qp

    def _fit(self, curves, qp, avail, budget_bits):
        """Coarsen until the exact total fits, then refine single tensors one QP at a time (the
        steepest distortion decrease per bit first) while the total stays within the budget."""
        by_name = {c.t.name: c for c in curves}

        def total():
            return sum(by_name[n].exact[q][0] for n, q in qp.items())

        def point(c, q):
            return c.exact[q] if q in c.exact else self._interp(c, q)

        for _ in range(_FILL_STEPS):            # over budget: the least distortion added per bit saved
            if total() <= avail:
                break
            cand = []
            for c in curves:
                q = qp[c.t.name]
                if q + 1 > min(c.top, self.hi):
                    continue
                (b0, d0), (b1, d1) = c.exact[q], point(c, q + 1)
                cand.append(((d1 - d0) / max(b0 - b1, 1e-9), c))
            if not cand:
                break
            _, c = min(cand, key=lambda e: e[0])
            qp[c.t.name] += 1
            self._exact(c, qp[c.t.name])
        blocked = set()
        for _ in range(_FILL_STEPS):            # under budget: the largest distortion decrease per bit
            gap = avail - total()
            if gap < 0 or gap <= FILL / 4 * budget_bits:
                break
            cand = []
            for c in curves:
                q = qp[c.t.name]
                if c.t.name in blocked or q - 1 < self.lo:
                    continue
                (b0, d0), (b1, d1) = c.exact[q], point(c, q - 1)
                if b1 - b0 <= gap * 1.5:
                    cand.append(((d0 - d1) / max(b1 - b0, 1e-9), c))
            if not cand:
                break
            _, c = max(cand, key=lambda e: e[0])
            name = c.t.name
            b1, _ = self._exact(c, qp[name] - 1)
            if b1 - c.exact[qp[name]][0] <= gap:
                qp[name] -= 1
            else:
                blocked.add(name)

    @staticmethod
    def _interp(c, q):
        i = int(np.clip(q - c.qps[0], 0, len(c.qps) - 1))
        return float(c.bits[i]), float(c.dist[i])
