# distutils: extra_compile_args = -O3 -ffp-contract=off
"""Rate-term quantizers (lambda_scale > 0): uniform (CABAC §9.3) and trellis-coded (CABAC §8.3).

CABAC §8.3 "Rate term", CABAC §9.3 "With rate term", CABAC §15 items 4 and 6. Both price a level
with the bit estimates of CABAC §4.6 from a private context memory (parameter set 0 everywhere,
NNCodec-2 index layout compacted to the contexts the estimator can touch,
N' = cabac_unary_length_minus1 greater-than flags, gpi-0 rules: no TCA, no HDSP, no codebook bounds,
never reset) and update that memory with the bins of the chosen level. The floating-point steps
follow NNCodec 2.1.3's Quant.cpp operation by operation (double throughout; -ffp-contract=off keeps
the compiler from fusing them).

Compact context layout of one estimator memory (the original NNCodec-2 index in brackets):

    0 .. 23          sig_flag 3*s + c                    [0 .. 23]
    24 .. 26         sign_flag 24 + c                    [48 .. 50]
    27 .. 26+2N'     greater-than flag j: 27 + 2j + (k < 0)   [53 + 2j + (k < 0)]
    27+2N' .. +33    remainder prefix bin i               [53 + 4N' + i]

The relative placement of the greater-than and remainder contexts is the original one, so even the
N' = 0 overlap (flag 0 sharing the first remainder contexts) is reproduced.

The trellis keeps 8 memories; after each position the states that inherit from the same
predecessor share its buffer by moving it to the first heir and copying it only for the others,
and a copy moves only the prefix of contexts that ever left their initial state (high-water mark).
"""
from libc.float cimport DBL_MAX
from libc.math cimport log, round
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset

from nnr_core.cabac._engine cimport NNR_CURVE, NNR_PARAM_SETS
from nnr_core.quant._trellis cimport (NNR_TCQ_MAX, NNR_TCQ_MIN, NNR_URQ_MAX, NNR_URQ_MIN,
                                       importance_ptr, trellis_branches, trellis_traceback,
                                       first_candidate, scaled_abs)

import numpy as np

from nnr_core.cabac.bitcost import BIT_COST

# CABAC §4.6 bit estimates, BITS[512 + (S >> 3)][bin]
cdef uint32_t BITS[1024][2]


cdef void _init_bits():
    cdef int i
    for i in range(1024):
        BITS[i][0] = <uint32_t>int(BIT_COST[i, 0])
        BITS[i][1] = <uint32_t>int(BIT_COST[i, 1])


_init_bits()

# CABAC §8.3 step 3 branch order into every state c (class 4 = the zero candidate)
cdef int32_t BRANCH_PREV[8][3]
cdef int32_t BRANCH_CLASS[8][3]
trellis_branches(BRANCH_PREV, BRANCH_CLASS)

cdef enum:
    SIGN_BASE = 24
    GTX_BASE = 27
    REM_CTX = 34          # remainder prefix bins 0..31 are reachable for 32-bit levels; 2 spare

# One context of an estimator: combined state S = S1 + 16*S0 and the fast estimator S0 (CABAC §4.1);
# every estimator context uses parameter set 0 and is never reset.  Its initial state is all
# zeros, so a memory starts from memset 0:
if NNR_PARAM_SETS[0][2] != 0 or NNR_PARAM_SETS[0][3] != 0:
    raise ImportError("nnr_core.quant._quant_rate assumes parameter set 0 starts at S0 = S1 = 0")

ctypedef struct RCtx:
    int16_t S
    int16_t S0


def context_count(int nflags):
    """Contexts of one compact estimator memory for N' = nflags greater-than flags."""
    return GTX_BASE + 2 * nflags + REM_CTX


cdef inline int _nb_class(int32_t nb) noexcept nogil:
    if nb == 0:
        return 0
    return 1 if nb < 0 else 2


cdef inline uint32_t _bits(const RCtx* m, int idx, int b) noexcept nogil:
    return BITS[512 + (m[idx].S >> 3)][b]


cdef inline void _upd(RCtx* c, int b) noexcept nogil:
    """CABAC §4.4 with parameter set 0 (its shifts are constants the compiler folds)."""
    cdef int S0 = c.S0
    cdef int S1 = c.S - 16 * S0
    if b:
        S0 += NNR_CURVE[16 + (S0 >> 3)] >> NNR_PARAM_SETS[0][0]
        S1 += NNR_CURVE[16 + (S1 >> 7)] >> NNR_PARAM_SETS[0][1]
    else:
        S0 -= NNR_CURVE[16 + ((-S0) >> 3)] >> NNR_PARAM_SETS[0][0]
        S1 -= NNR_CURVE[16 + ((-S1) >> 7)] >> NNR_PARAM_SETS[0][1]
    c.S0 = <int16_t>S0
    c.S = <int16_t>(S1 + 16 * S0)


cdef inline uint32_t _rem_rate(const RCtx* m, int rem_base, int64_t a) noexcept nogil:
    """Scaled bits of abs_remainder a: context-coded Exp-Golomb prefix, bypass suffix."""
    cdef uint32_t cost
    cdef int64_t base
    cdef int idx, L
    if a == 0:
        return _bits(m, rem_base, 0)
    cost = _bits(m, rem_base, 1)
    base = 1
    L = 1
    idx = rem_base + 1
    while a > base + (<int64_t>1 << L) - 1:
        cost += _bits(m, idx, 1)
        base += <int64_t>1 << L
        idx += 1
        L += 1
    return cost + _bits(m, idx, 0) + (<uint32_t>L << 15)


cdef inline uint32_t _rate(const RCtx* m, int32_t v, int sig_base, int32_t nb, int nflags,
                           int rem_base) noexcept nogil:
    """Scaled bits of all bins of v in the unbounded binarization (CABAC §5.1 with N' flags)."""
    cdef int c = _nb_class(nb)
    cdef uint32_t cost
    cdef int64_t a
    cdef int g, n, gb
    if v == 0:
        return _bits(m, sig_base + c, 0)
    cost = _bits(m, sig_base + c, 1) + _bits(m, SIGN_BASE + c, 1 if v < 0 else 0)
    gb = GTX_BASE + (0 if v > 0 else 1)
    a = (<int64_t>v if v > 0 else -<int64_t>v) - 1
    g = 1 if a != 0 else 0
    cost += _bits(m, gb, g)
    n = 1
    while g and n < nflags:
        a -= 1
        g = 1 if a != 0 else 0
        cost += _bits(m, gb + 2 * n, g)
        n += 1
    if g:
        cost += _rem_rate(m, rem_base, a - 1)   # abs_remainder = |v| - N' - 1
    return cost


cdef inline void _rate_pair(const RCtx* m, int sig_idx, int nbc, int neg, int32_t L, int nflags,
                            int rem_base, uint32_t* r_lo, uint32_t* r_hi) noexcept nogil:
    """_rate of the levels with magnitudes L >= 1 and L + 1 (same sign), sharing their common bins."""
    cdef uint32_t common = _bits(m, sig_idx, 1) + _bits(m, SIGN_BASE + nbc, neg)
    cdef uint32_t c1
    cdef int gb = GTX_BASE + neg
    cdef int nf = nflags if nflags > 0 else 1      # flag 0 is coded even for N' = 0
    cdef int j = 0
    cdef int jmax = L - 1 if L - 1 < nf else nf
    while j < jmax:                                 # greater-than flags equal to 1 in both
        common += _bits(m, gb + 2 * j, 1)
        j += 1
    if L - 1 < nf:
        r_lo[0] = common + _bits(m, gb + 2 * j, 0)
        c1 = common + _bits(m, gb + 2 * j, 1)
        j += 1
        if j < nf:
            r_hi[0] = c1 + _bits(m, gb + 2 * j, 0)
        else:
            r_hi[0] = c1 + _rem_rate(m, rem_base, <int64_t>L - nf)
    else:
        r_lo[0] = common + _rem_rate(m, rem_base, <int64_t>L - nf - 1)
        r_hi[0] = common + _rem_rate(m, rem_base, <int64_t>L - nf)


cdef inline int _update(RCtx* m, int32_t v, int sig_base, int32_t nb, int nflags,
                        int rem_base) noexcept nogil:
    """Update the contexts with the bins of v; returns one past the highest context touched."""
    cdef int c = _nb_class(nb)
    cdef int64_t a, base
    cdef int g, n, gb, idx, L, top
    if v == 0:
        _upd(&m[sig_base + c], 0)
        return sig_base + c + 1
    _upd(&m[sig_base + c], 1)
    _upd(&m[SIGN_BASE + c], 1 if v < 0 else 0)
    gb = GTX_BASE + (0 if v > 0 else 1)
    a = (<int64_t>v if v > 0 else -<int64_t>v) - 1
    g = 1 if a != 0 else 0
    _upd(&m[gb], g)
    top = gb + 1
    n = 1
    while g and n < nflags:
        a -= 1
        g = 1 if a != 0 else 0
        _upd(&m[gb + 2 * n], g)
        top = gb + 2 * n + 1
        n += 1
    if g:
        a -= 1
        if a == 0:
            _upd(&m[rem_base], 0)
            return top if top > rem_base + 1 else rem_base + 1
        _upd(&m[rem_base], 1)
        base = 1
        L = 1
        idx = rem_base + 1
        while a > base + (<int64_t>1 << L) - 1:
            _upd(&m[idx], 1)
            base += <int64_t>1 << L
            idx += 1
            L += 1
        _upd(&m[idx], 0)
        if idx + 1 > top:
            top = idx + 1
    return top


def uniform_rate(const float[::1] w, const int64_t[::1] scan, int32_t[::1] out, float qstep,
                 double lambda_scale, int nflags, int16_t[::1] scratch, const double[::1] importance=None):
    """CABAC §9.3 with rate term along `scan`; False on the int32 overflow of the guard.

    lambda_scale is NNCodec's float32 value widened to double; `scratch` holds at least
    2 * context_count(nflags) int16. `importance` (one weight per element of w, or None) multiplies
    every candidate's distortion; a weight of 1.0 leaves the choice bit for bit unchanged.
    """
    cdef Py_ssize_t n = scan.shape[0], k
    cdef int nctx = GTX_BASE + 2 * nflags + REM_CTX
    cdef int rem_base = GTX_BASE + 2 * nflags
    cdef double lam = lambda_scale * (log(2.0) / 6.0)
    cdef double dscale = <double>(1 << 15) / lam
    cdef double qscale = 1.0 / <double>qstep
    cdef double scaled, absw, min_cost, cost, diff
    cdef int64_t q, qmax, best, qlo
    cdef int32_t nb = 0, level
    cdef float wv
    cdef int sign
    cdef bint ok = True
    cdef RCtx* m
    cdef double f = 1.0
    cdef const double* imp = importance_ptr(importance, w.shape[0])
    if scratch.shape[0] < 2 * nctx:
        raise ValueError("scratch too small")
    m = <RCtx*>&scratch[0]
    with nogil:
        memset(m, 0, nctx * sizeof(RCtx))
        for k in range(n):
            wv = w[scan[k]]
            scaled = round(<double>wv * qscale)
            if scaled > NNR_URQ_MAX or scaled < NNR_URQ_MIN:
                ok = False
                break
            sign = -1 if wv < 0 else 1
            absw = <double>sign * <double>wv * qscale
            if imp != NULL:
                f = imp[scan[k]]
            best = 0
            min_cost = (dscale * (absw * absw)) * f + <double>_rate(m, 0, 0, nb, nflags, rem_base)
            qmax = <int64_t>round(absw)
            qlo = qmax - 1 if qmax - 1 > 1 else 1
            q = qlo
            while q <= qmax:
                diff = absw - <double>q
                # REF-QUIRK: the rate of the positive level, the sign is ignored (CABAC §9.3)
                cost = (dscale * (diff * diff)) * f + <double>_rate(m, <int32_t>q, 0, nb, nflags, rem_base)
                if cost < min_cost:
                    best = q
                    min_cost = cost
                q += 1
            level = <int32_t>(best * sign)
            out[scan[k]] = level
            _update(m, level, 0, nb, nflags, rem_base)
            nb = level
    return ok


def tcq_rate(const float[::1] w, const int64_t[::1] scan, int32_t[::1] out, float qstep,
             double lambda_scale, int nflags, uint8_t[::1] decisions, int16_t[::1] scratch,
             const double[::1] importance=None):
    """CABAC §8.3 with rate term: Viterbi over the 8 DQ states along `scan`; indices i to `out`.

    `decisions` is scratch of 8 bytes per position, `scratch` at least 16 * context_count(nflags)
    int16 (8 estimator memories). `importance` (one weight per element of w, or None) multiplies
    every candidate's distortion; a weight of 1.0 leaves the search bit for bit unchanged.
    Returns False on the int32 overflow of the guard.
    """
    cdef Py_ssize_t n = scan.shape[0], k
    cdef int nctx = GTX_BASE + 2 * nflags + REM_CTX
    cdef int rem_base = GTX_BASE + 2 * nflags
    cdef double qstep_d = <double>qstep
    cdef float scale = <float>(1.0 / qstep_d)
    cdef double qscale = 1.0 / qstep_d
    cdef double lam = lambda_scale * 4.0 * (log(2.0) / 6.0) * 0.7
    cdef double dscale = <double>(1 << 15) / lam
    cdef float prod, wv
    cdef double org, diff, cost, best_cost
    cdef double dist[5]
    cdef int32_t lev[5]
    cdef double J[8]
    cdef double Jn[8]
    cdef RCtx* buf[8]          # memory of state s (the objects of the previous position)
    cdef RCtx* nbuf[8]
    cdef int hw[8]             # contexts >= hw[s] of buf[s] are in their initial state
    cdef int nhw[8]
    cdef int32_t nbr[2][8]     # the neighbour stored in each of NNCodec's two state arrays
    cdef uint32_t rate[8][5]
    cdef int nbc, ca, cb
    cdef int32_t la, lb
    cdef int32_t chosen_p[8]
    cdef int32_t chosen_lev[8]
    cdef int owner[8]
    cdef RCtx* free_buf[8]
    cdef int free_hw[8]
    cdef int nfree, src_hw, top
    cdef int32_t q0, q, p, cls, s, c, b, level, i, sgn, bp, bcl, cur, prv
    cdef bint ok = True
    cdef RCtx* base
    cdef double f = 1.0
    cdef const double* imp = importance_ptr(importance, w.shape[0])
    if scratch.shape[0] < 16 * nctx:
        raise ValueError("scratch too small")
    base = <RCtx*>&scratch[0]
    with nogil:
        for k in range(n):
            prod = w[scan[k]] * scale
            if <double>prod >= NNR_TCQ_MAX + 0.5 or <double>prod <= NNR_TCQ_MIN - 0.5:
                ok = False
                break
        if ok and n > 0:
            memset(base, 0, 8 * nctx * sizeof(RCtx))
            for s in range(8):
                buf[s] = base + s * nctx
                hw[s] = 0
                nbr[0][s] = 0
                nbr[1][s] = 0
            J[0] = 0.0
            for s in range(1, 8):
                J[s] = 0.5 * DBL_MAX
            for k in range(n):
                wv = w[scan[k]]
                org = scaled_abs(wv, qscale)
                sgn = -1 if wv < 0 else 1
                q0 = first_candidate(org)
                if imp != NULL:
                    f = imp[scan[k]]
                dist[4] = (dscale * (org * org)) * f
                lev[4] = 0
                for q in range(q0, q0 + 4):
                    diff = org - <double>q
                    dist[q & 3] = (dscale * (diff * diff)) * f
                    lev[q & 3] = sgn * ((q + 1) >> 1)
                prv = k & 1            # NNCodec's array holding the previous position's states
                cur = prv ^ 1
                # decisions: read only the previous memories (NNCodec updates curr[c] in between,
                # but no decision of this position reads a curr object)
                # rates of the three candidates of every predecessor p: zero and the two non-zero
                # classes of p's quantizer, whose magnitudes differ by one (same as _rate)
                for p in range(8):
                    nbc = _nb_class(nbr[prv][p])
                    rate[p][4] = _bits(buf[p], 3 * p + nbc, 0)
                    ca = 3 * (p & 1)
                    cb = 2 - (p & 1)
                    la = lev[ca] if lev[ca] > 0 else -lev[ca]
                    lb = lev[cb] if lev[cb] > 0 else -lev[cb]
                    if la < lb:
                        _rate_pair(buf[p], 3 * p + nbc, nbc, 1 if sgn < 0 else 0, la, nflags,
                                   rem_base, &rate[p][ca], &rate[p][cb])
                    else:
                        _rate_pair(buf[p], 3 * p + nbc, nbc, 1 if sgn < 0 else 0, lb, nflags,
                                   rem_base, &rate[p][cb], &rate[p][ca])
                for c in range(8):
                    best_cost = DBL_MAX
                    bp = 0
                    bcl = 0
                    for b in range(3):
                        p = BRANCH_PREV[c][b]
                        cls = BRANCH_CLASS[c][b]
                        cost = J[p] + dist[cls] + <double>rate[p][cls]
                        if cost < best_cost:
                            best_cost = cost
                            bp = p
                            bcl = cls
                    Jn[c] = best_cost
                    chosen_p[c] = bp
                    chosen_lev[c] = lev[bcl]
                    decisions[8 * k + c] = <uint8_t>(bp | (bcl << 3))
                # memories: the first heir of p takes p's buffer, the others copy it into the
                # buffers of the predecessors nobody inherits from
                for s in range(8):
                    owner[s] = -1
                for c in range(8):
                    p = chosen_p[c]
                    if owner[p] < 0:
                        owner[p] = c
                        nbuf[c] = buf[p]
                        nhw[c] = hw[p]
                    else:
                        nbuf[c] = NULL
                nfree = 0
                for s in range(8):
                    if owner[s] < 0:
                        free_buf[nfree] = buf[s]
                        free_hw[nfree] = hw[s]
                        nfree += 1
                for c in range(8):
                    if nbuf[c] == NULL:
                        nfree -= 1
                        p = chosen_p[c]
                        src_hw = hw[p]
                        if src_hw > 0:
                            memcpy(free_buf[nfree], buf[p], src_hw * sizeof(RCtx))
                        if free_hw[nfree] > src_hw:
                            memset(free_buf[nfree] + src_hw, 0,
                                   (free_hw[nfree] - src_hw) * sizeof(RCtx))
                        nbuf[c] = free_buf[nfree]
                        nhw[c] = src_hw
                # REF-QUIRK: the update uses the sig contexts of state c and the neighbour last
                # stored in c's own object, i.e. the level decided into c two positions earlier
                for c in range(8):
                    top = _update(nbuf[c], chosen_lev[c], 3 * c, nbr[cur][c], nflags, rem_base)
                    if top > nhw[c]:
                        nhw[c] = top
                    nbr[cur][c] = chosen_lev[c]
                for s in range(8):
                    buf[s] = nbuf[s]
                    hw[s] = nhw[s]
                    J[s] = Jn[s]
            trellis_traceback(J, &decisions[0], &w[0], &scan[0], &out[0], n, qscale)
    return ok
