# cython: language_level=3
"""Shadow estimators of the encoder's parameter-set choice (CABAC §6.5): the C kernel
of include/nnr_shadow.h (nine estimators per context in registers, table lookups) and the pseudo
pass's buckets of bins, one per context, which a flush runs through it."""
from libc.stdint cimport uint8_t, int16_t, uint32_t, int64_t, uint64_t

from nnr_core.cabac._engine cimport NNR_NUM_PARAM_SETS


cdef extern from "nnr_shadow.h":
    ctypedef struct NnrShadowCtx:
        int16_t S0[9]
        int16_t S1[9]
        uint64_t cost[9]
    int nnr_shadow_init(const uint32_t* bitcost) noexcept nogil
    void nnr_shadow_reset(NnrShadowCtx* m) noexcept nogil
    void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) noexcept nogil

cdef extern from "nnr_bits.h":
    int nnr_msb64(uint64_t x) noexcept nogil


# The pseudo pass's scratch: per-context estimators, a bucket of emitted bins per context, and the
# magnitudes of the positions whose greater-than and remainder flags the flush derives itself.
ctypedef struct Shadow:
    NnrShadowCtx* m         # nctx estimators
    int nctx
    int N                   # greater-than flags (CABAC §5.1)
    int ctx_gtx             # context of abs_level_greater_x[0], sign 0 (CABAC §6.1)
    int ctx_rem             # context of the remainder prefix bin 0
    uint8_t* bins           # nctx buckets of SHADOW_CHUNK bins each
    uint8_t** wp            # per context: where its next bin goes
    Py_ssize_t n            # bins emitted since the last flush (all buckets)
    int64_t* mag            # 2 |i| + (i < 0) of the nonzero positions, in coding order
    Py_ssize_t nmag
    int64_t* mag2           # flush scratch: the magnitudes that go on to the next flag
    uint8_t* neg_bins       # flush scratch: one flag's bins of negative positions
    uint8_t* pos_bins       # flush scratch: the same for positive ones


cdef enum:
    SHADOW_CHUNK = 1 << 13
    SET_PENALTY = 3 * 32768     # CABAC §6.5 step 4: sets 1..8 pay for their three bypass bins


cdef inline int shadow_best(const NnrShadowCtx* m) noexcept nogil:
    """Cheapest set; sets 1..8 charged 3 bits extra; the first minimum wins (CABAC §6.5.4)."""
    cdef int k, best = 0
    cdef uint64_t best_cost = m.cost[0]
    for k in range(1, NNR_NUM_PARAM_SETS):
        if m.cost[k] + SET_PENALTY < best_cost:
            best = k
            best_cost = m.cost[k] + SET_PENALTY
    return best


cdef inline void shadow_emit(Shadow* sh, int ci, int bin) noexcept nogil:
    sh.wp[ci][0] = <uint8_t>bin
    sh.wp[ci] += 1


cdef inline void shadow_flags(Shadow* sh) noexcept nogil:
    """The greater-than flags and the remainder prefix of the listed positions (CABAC §5.1, as the
    pseudo pass binarizes): flag j's bins are, in order, (|i| > j + 1) of the positions with
    |i| >= j + 1, split by sign; the remainder prefix bin x's are (t > x) of those with t >= x,
    t = floor(log2(|i| - N)).  Each flag's survivors are compacted for the next one, without a
    branch per bin."""
    cdef int64_t* cur = sh.mag
    cdef int64_t* nxt = sh.mag2
    cdef int64_t* tmp
    cdef Py_ssize_t e, n = sh.nmag, nn, np_, nl
    cdef int j, x, neg
    cdef int64_t v, thr
    cdef uint8_t bin
    for j in range(sh.N):
        if n == 0:
            break
        nn = np_ = nl = 0
        thr = 2 * (j + 1) + 1                   # |i| > j + 1  <=>  2 |i| + neg > 2 (j + 1) + 1
        for e in range(n):
            v = cur[e]
            bin = v > thr
            neg = v & 1
            sh.neg_bins[nn] = bin
            nn += neg
            sh.pos_bins[np_] = bin
            np_ += 1 - neg
            nxt[nl] = v
            nl += bin
        if np_ > 0:
            nnr_shadow_run(&sh.m[sh.ctx_gtx + 2 * j], sh.pos_bins, np_)
        if nn > 0:
            nnr_shadow_run(&sh.m[sh.ctx_gtx + 2 * j + 1], sh.neg_bins, nn)
        tmp = cur
        cur = nxt
        nxt = tmp
        n = nl
    for e in range(n):                          # every survivor has |i| > N
        cur[e] = nnr_msb64(<uint64_t>((cur[e] >> 1) - sh.N))
    x = 0
    while n > 0:
        nl = 0
        for e in range(n):
            v = cur[e]
            bin = v > x
            sh.pos_bins[e] = bin
            nxt[nl] = v
            nl += bin
        nnr_shadow_run(&sh.m[sh.ctx_rem + x], sh.pos_bins, n)
        tmp = cur
        cur = nxt
        nxt = tmp
        n = nl
        x += 1
    sh.nmag = 0


cdef inline void shadow_flush(Shadow* sh) noexcept nogil:
    """Run every bucket's bins, and the listed positions' flags, through their contexts'
    estimators; empty the buckets and the list."""
    cdef int c
    cdef uint8_t* start
    for c in range(sh.nctx):
        start = sh.bins + <Py_ssize_t>c * SHADOW_CHUNK
        if sh.wp[c] != start:
            nnr_shadow_run(&sh.m[c], start, sh.wp[c] - start)
            sh.wp[c] = start
    shadow_flags(sh)
    sh.n = 0
