"""Tables and helpers shared by the quantizers (CABAC §8.1, CABAC §8.3, CABAC §9.3)."""
from libc.stdint cimport int32_t, int64_t, uint8_t

from nnr_core.cabac._engine cimport NNR_DQ_NEXT

cdef extern from "nnr_quant_limits.h":
    const double NNR_URQ_MAX
    const double NNR_URQ_MIN
    const double NNR_TCQ_MAX
    const double NNR_TCQ_MIN


cdef inline void trellis_branches(int32_t prev[8][3], int32_t cls[8][3]) noexcept nogil:
    """CABAC §8.3 step 3: the three branches (previous state, candidate class) into every state c,
    in NNCodec's order. Class 0..3 is q mod 4 of the candidate q; class 4 is the zero candidate."""
    cdef int32_t count[8]
    cdef int32_t p, c
    for c in range(8):
        count[c] = 0
    for p in range(8):
        c = NNR_DQ_NEXT[p][0]
        prev[c][count[c]] = p
        cls[c][count[c]] = 3 * (p & 1)
        count[c] += 1
        prev[c][count[c]] = p
        cls[c][count[c]] = 4
        count[c] += 1
        c = NNR_DQ_NEXT[p][1]
        prev[c][count[c]] = p
        cls[c][count[c]] = 2 - (p & 1)
        count[c] += 1


cdef inline const double* importance_ptr(const double[::1] importance, Py_ssize_t n) except? NULL:
    """Distortion weights (one per element, row-major) as a pointer; NULL for None: weight 1.0."""
    if importance is None or n == 0:
        return NULL
    if importance.shape[0] != n:
        raise ValueError(f"importance has {importance.shape[0]} elements, w {n}")
    return &importance[0]


cdef inline int32_t first_candidate(double org) noexcept nogil:
    """q0 = max(1, trunc(t) - 1) (CABAC §8.3 step 2)."""
    cdef int32_t q0 = <int32_t>org - 1
    return q0 if q0 > 1 else 1


cdef inline double scaled_abs(float wv, double qscale) noexcept nogil:
    """t = |w| * (1/Delta) in double, as NNCodec's qscale * value * sign."""
    cdef double t = qscale * <double>wv
    return -t if wv < 0 else t


cdef inline void trellis_traceback(const double* J, const uint8_t* decisions, const float* w,
                                   const int64_t* scan, int32_t* out, Py_ssize_t n,
                                   double qscale) noexcept nogil:
    """CABAC §8.3 step 5: from the cheapest final state (the first on ties) back along the decisions
    (prev state | class << 3 per position and state), writing the indices i to out."""
    cdef int32_t s = 0, p, cls, q0, q, level, i
    cdef Py_ssize_t k
    cdef uint8_t dec
    cdef float wv
    for p in range(1, 8):
        if J[p] < J[s]:
            s = p
    for k in range(n - 1, -1, -1):
        dec = decisions[8 * k + s]
        p = dec & 7
        cls = dec >> 3
        i = 0
        if cls != 4:
            wv = w[scan[k]]
            q0 = first_candidate(scaled_abs(wv, qscale))
            # the candidate of class cls among q0 .. q0+3
            q = q0 + ((cls - q0) & 3)
            level = (q + 1) >> 1
            # i = 2k - sgn(k)(p & 1) (CABAC §8.2); level > 0 here, sign from w
            i = 2 * level - (p & 1)
            if wv < 0:
                i = -i
        out[scan[k]] = i
        s = p
