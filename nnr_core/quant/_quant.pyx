# distutils: extra_compile_args = -O3 -ffp-contract=off
"""Encoder quantization kernels: uniform (§9.3) and trellis-coded (§8.3) quantization.

NNC-CABAC-QUANT.md §8.3, §9.3, §7.1-7.2 (scan order). Every loop runs without the GIL over typed
memoryviews; the Python front (quantize.py) checks the arguments and owns the error reporting.
The floating-point steps follow NNCodec 2.1.3's Quant.cpp operation by operation (float32 where it
uses float32, double where it uses double); -ffp-contract=off keeps the compiler from fusing them.
"""
from libc.float cimport DBL_MAX
from libc.math cimport round
from libc.stdint cimport int32_t, int64_t, uint8_t

from nnr_core.quant._trellis cimport (NNR_TCQ_MAX, NNR_TCQ_MIN, NNR_URQ_MAX, NNR_URQ_MIN,
                                       importance_ptr, trellis_branches, trellis_traceback,
                                       first_candidate, scaled_abs)

import numpy as np

# §8.3 step 3 branch order into every state c (class 4 = the zero candidate)
cdef int32_t BRANCH_PREV[8][3]
cdef int32_t BRANCH_CLASS[8][3]
trellis_branches(BRANCH_PREV, BRANCH_CLASS)


cdef void _fill_scan(int64_t* out, int64_t rows, int64_t row_width, int64_t bd) noexcept nogil:
    """Row-major positions in coding scan order: block rows, blocks, rows, columns (§7.2)."""
    cdef int64_t n = 0, r0, c0, r, c, r1, c1
    r0 = 0
    while r0 < rows:
        r1 = r0 + bd if r0 + bd < rows else rows
        c0 = 0
        while c0 < row_width:
            c1 = c0 + bd if c0 + bd < row_width else row_width
            for r in range(r0, r1):
                for c in range(c0, c1):
                    out[n] = r * row_width + c
                    n += 1
            c0 += bd
        r0 += bd


def scan_positions(int64_t rows, int64_t row_width, int scan_order):
    """Row-major index of every scan position of a [rows, row_width] matrix (§7.1, §7.2)."""
    cdef int64_t n = rows * row_width
    pos = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] out = pos
    cdef int64_t bd
    if n == 0:
        return pos
    if scan_order == 0:
        with nogil:
            _fill_scan(&out[0], 1, n, n)
    else:
        bd = 4 << scan_order
        with nogil:
            _fill_scan(&out[0], rows, row_width, bd)
    return pos


def uniform_plain(const float[::1] w, int32_t[::1] out, float qstep):
    """§9.3 without rate term: round(fl32(fl32(1/Delta) * w)); False on int32 overflow."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef float scale = <float>1.0 / qstep
    cdef float prod
    cdef double scaled
    cdef bint ok = True
    with nogil:
        for i in range(n):
            prod = scale * w[i]
            scaled = round(<double>prod)
            if scaled > NNR_URQ_MAX or scaled < NNR_URQ_MIN:
                ok = False
                break
            out[i] = <int32_t>scaled
    return ok


cdef inline void _best3(const double* J, const double* dist, int p0, int c0, int p1, int c1,
                        int p2, int c2, double* Jc, uint8_t* dec) noexcept nogil:
    """J[c] = the cheapest of three branches (p, class), strictly smaller wins (§8.3 step 4)."""
    cdef double best = J[p0] + dist[c0]
    cdef double cost = J[p1] + dist[c1]
    cdef uint8_t d = <uint8_t>(p0 | (c0 << 3))
    if cost < best:
        best = cost
        d = <uint8_t>(p1 | (c1 << 3))
    cost = J[p2] + dist[c2]
    if cost < best:
        best = cost
        d = <uint8_t>(p2 | (c2 << 3))
    Jc[0] = best
    dec[0] = d


def branch_table():
    """The §8.3 branch order as built from NEXT: [(prev, class) x 3] for every state (for tests)."""
    return [[(BRANCH_PREV[c][b], BRANCH_CLASS[c][b]) for b in range(3)] for c in range(8)]


def tcq_plain(const float[::1] w, const int64_t[::1] scan, int32_t[::1] out, float qstep,
              uint8_t[::1] decisions, const double[::1] importance=None):
    """§8.3 without rate term: Viterbi over the 8 DQ states along `scan`; writes indices i to `out`.

    `decisions` is scratch of 8 bytes per position (prev state | class << 3). `importance` (one
    weight per element of w, or None) multiplies every candidate's distortion; a weight of 1.0
    leaves the search bit for bit unchanged. Returns False on the int32 overflow of the guard,
    before any search.
    """
    cdef Py_ssize_t n = scan.shape[0], k
    cdef double qstep_d = <double>qstep
    cdef float scale = <float>(1.0 / qstep_d)      # float32_t(1.0) / qstep, rounded to float32
    cdef double qscale = 1.0 / qstep_d
    cdef float prod
    cdef double org, diff
    cdef double dist[5]
    cdef double J[8]
    cdef double Jn[8]
    cdef int32_t q0, q, s, c
    cdef bint ok = True
    cdef double f = 1.0
    cdef const double* imp = importance_ptr(importance, w.shape[0])
    with nogil:
        for k in range(n):
            prod = w[scan[k]] * scale
            # round(prod) > 2^31 - 3 or < -(2^31 - 2), round being half away from zero
            if <double>prod >= NNR_TCQ_MAX + 0.5 or <double>prod <= NNR_TCQ_MIN - 0.5:
                ok = False
                break
        if ok and n > 0:
            J[0] = 0.0
            for s in range(1, 8):
                J[s] = 0.5 * DBL_MAX
            for k in range(n):
                org = scaled_abs(w[scan[k]], qscale)
                q0 = first_candidate(org)
                if imp != NULL:
                    f = imp[scan[k]]
                dist[4] = (org * org) * f
                for q in range(q0, q0 + 4):
                    diff = org - <double>q
                    dist[q & 3] = (diff * diff) * f
                # the branch table of §8.3 step 3, unrolled (checked against BRANCH_PREV/CLASS)
                _best3(J, dist, 0, 0, 0, 4, 4, 2, &Jn[0], &decisions[8 * k + 0])
                _best3(J, dist, 2, 0, 2, 4, 6, 2, &Jn[1], &decisions[8 * k + 1])
                _best3(J, dist, 0, 2, 4, 0, 4, 4, &Jn[2], &decisions[8 * k + 2])
                _best3(J, dist, 2, 2, 6, 0, 6, 4, &Jn[3], &decisions[8 * k + 3])
                _best3(J, dist, 3, 1, 7, 3, 7, 4, &Jn[4], &decisions[8 * k + 4])
                _best3(J, dist, 1, 1, 5, 3, 5, 4, &Jn[5], &decisions[8 * k + 5])
                _best3(J, dist, 3, 3, 3, 4, 7, 1, &Jn[6], &decisions[8 * k + 6])
                _best3(J, dist, 1, 3, 1, 4, 5, 1, &Jn[7], &decisions[8 * k + 7])
                for c in range(8):
                    J[c] = Jn[c]
            trellis_traceback(J, &decisions[0], &w[0], &scan[0], &out[0], n, qscale)
    return ok
