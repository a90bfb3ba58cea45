"""Tables and helpers shared by the quantizers (NNC-CABAC-QUANT.md §8.1, §8.3, §9.3)."""
from libc.stdint cimport int32_t

from nnr_core.cabac._engine cimport NNR_DQ_NEXT

cdef extern from *:
    """
    /* Overflow limits as NNCodec's (1 << 31) arithmetic wraps them (§9.3, §8.3). */
    static const double NNR_URQ_MAX = 2147483647.0;
    static const double NNR_URQ_MIN = -2147483648.0;
    static const double NNR_TCQ_MAX = 2147483645.0;
    static const double NNR_TCQ_MIN = -2147483646.0;
    """
    const double NNR_URQ_MAX
    const double NNR_URQ_MIN
    const double NNR_TCQ_MAX
    const double NNR_TCQ_MIN


cdef inline void trellis_branches(int32_t prev[8][3], int32_t cls[8][3]) noexcept nogil:
    """§8.3 step 3: the three branches (previous state, candidate class) into every state c, in
    NNCodec's order. Class 0..3 is q mod 4 of the candidate q; class 4 is the zero candidate."""
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
