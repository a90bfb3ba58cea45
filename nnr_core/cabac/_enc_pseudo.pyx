# cython: language_level=3
"""The encoder's parameter-set pass: NNCodec's choice of the context parameter sets
(CABAC §6.5).  A pseudo pass over the tensor, the scan of CABAC §7 with row skipping and
block-row resets, binarizes every position (REF-QUIRK: the reconstruction index i, unbounded,
without the bypass suffix) and charges its bins to nine shadow estimators per context, one per
parameter set of CABAC §4.2, with the bit estimates of CABAC §4.6; the per-tensor procedure then
signals each context's cheapest set (``shadow_best`` of ``_shadow.pxd``).

The pass puts each context's bins into a bucket of its own (``_shadow.pxd``); a flush runs the
buckets through the C kernel of ``include/nnr_shadow.c`` (compiled into this module), which
holds the nine estimators of a context in registers.  Tensors without TCA and HDSP list only
|i| per position and let the flush derive the greater-than and remainder bins.  Runs ``nogil``.
"""
from libc.stdint cimport uint8_t, int32_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset

from nnr_core.cabac.bitcost import BIT_COST

from nnr_core.cabac._engine cimport (
    NNR_NUM_PARAM_SETS, NNR_DQ_NEXT, NNR_DQ_ADV0, CTX_SIG, CTX_SIGN, CTX_GTX, ctx_sig, ctx_sign,
    ctx_gtx, ctx_rem, neighbour_class, dq_level, scan_block, scan_end)
from nnr_core.cabac._enc_job cimport EncJob
from nnr_core.cabac._shadow cimport (
    NnrShadowCtx, Shadow, SHADOW_CHUNK, nnr_msb64, nnr_shadow_init, nnr_shadow_reset,
    nnr_shadow_run, shadow_emit, shadow_flush)


# CABAC §4.6 bit estimates, from nnr_core.cabac.bitcost (built from the formula), for the kernel.
cdef uint32_t BITCOST[1024][2]
cdef Py_ssize_t _x
for _x in range(1024):
    BITCOST[_x][0] = BIT_COST[_x, 0]
    BITCOST[_x][1] = BIT_COST[_x, 1]

if nnr_shadow_init(&BITCOST[0][0]) != 0:
    raise ImportError("include/nnr_shadow.c assumes other parameter sets than nnr_cabac_tables.h's")


cdef inline void shadow_reset_all(Shadow* sh) noexcept nogil:
    cdef int x
    for x in range(sh.nctx):
        nnr_shadow_reset(&sh.m[x])


cdef Shadow* shadow_new(int nctx, int N) noexcept nogil:
    """The pseudo pass's scratch with every estimator at its initial state; NULL if out of memory."""
    cdef Shadow* sh = <Shadow*>calloc(1, sizeof(Shadow))
    cdef int c
    if sh == NULL:
        return NULL
    sh.nctx = nctx
    sh.N = N
    sh.ctx_gtx = CTX_GTX
    sh.ctx_rem = ctx_rem(N)
    sh.m = <NnrShadowCtx*>calloc(nctx, sizeof(NnrShadowCtx))
    sh.bins = <uint8_t*>malloc(<size_t>nctx * SHADOW_CHUNK)
    sh.wp = <uint8_t**>malloc(nctx * sizeof(uint8_t*))
    sh.mag = <int64_t*>malloc(SHADOW_CHUNK * sizeof(int64_t))
    sh.mag2 = <int64_t*>malloc(SHADOW_CHUNK * sizeof(int64_t))
    sh.neg_bins = <uint8_t*>malloc(SHADOW_CHUNK)
    sh.pos_bins = <uint8_t*>malloc(SHADOW_CHUNK)
    if (sh.m == NULL or sh.bins == NULL or sh.wp == NULL or sh.mag == NULL or sh.mag2 == NULL
            or sh.neg_bins == NULL or sh.pos_bins == NULL):
        shadow_free(sh)
        return NULL
    for c in range(nctx):
        sh.wp[c] = sh.bins + <Py_ssize_t>c * SHADOW_CHUNK
    shadow_reset_all(sh)
    return sh


cdef void shadow_free(Shadow* sh) noexcept nogil:
    if sh != NULL:
        free(sh.m)
        free(sh.bins)
        free(sh.wp)
        free(sh.mag)
        free(sh.mag2)
        free(sh.neg_bins)
        free(sh.pos_bins)
        free(sh)


def shadow_costs(const uint8_t[::1] bins):
    """One context's bins through the nine estimators from their initial states (for tests):
    the accumulated costs and the final S0, S1 of every set."""
    cdef NnrShadowCtx m
    memset(&m, 0, sizeof(m))
    nnr_shadow_reset(&m)
    if bins.shape[0] > 0:
        nnr_shadow_run(&m, &bins[0], bins.shape[0])
    return [m.cost[k] for k in range(NNR_NUM_PARAM_SETS)], \
        [m.S0[k] for k in range(NNR_NUM_PARAM_SETS)], [m.S1[k] for k in range(NNR_NUM_PARAM_SETS)]


cdef inline void _pseudo_level(Shadow* sh, int64_t i, int s, int cls, int64_t b, int h,
                               int N) noexcept nogil:
    """Pseudo-code one position (CABAC §6.5).  REF-QUIRK: NNCodec binarizes the reconstruction index
    i, always unbounded (CABAC §5.1), without the bypass suffix."""
    cdef int ci, j, t, x, neg
    cdef int64_t a
    shadow_emit(sh, ctx_sig(s, cls, b, h), 1 if i != 0 else 0)
    if i == 0:
        sh.n += 1
        return
    neg = 1 if i < 0 else 0
    shadow_emit(sh, ctx_sign(cls, b), neg)
    a = -i if neg else i
    for j in range(N):
        if a <= j + 1:
            shadow_emit(sh, ctx_gtx(N, j, neg, b), 0)
            sh.n += 3 + j
            return
        shadow_emit(sh, ctx_gtx(N, j, neg, b), 1)
    # Exp-Golomb-0 prefix of a - (N + 1): t = floor(log2(a - N)) ones, then a zero.
    t = nnr_msb64(<uint64_t>(a - N))
    ci = ctx_rem(N)
    for x in range(t):
        shadow_emit(sh, ci + x, 1)
    shadow_emit(sh, ci + t, 0)
    sh.n += 3 + N + t


cdef inline void _pseudo_level_listed(Shadow* sh, int64_t i, int s, int cls) noexcept nogil:
    """_pseudo_level without TCA and HDSP: the sig and sign bins go to their buckets, |i| to the
    list whose flags the flush derives (shadow_flags)."""
    shadow_emit(sh, CTX_SIG + 3 * s + cls, 1 if i != 0 else 0)
    if i == 0:
        sh.n += 1
        return
    shadow_emit(sh, CTX_SIGN + cls, 1 if i < 0 else 0)
    sh.mag[sh.nmag] = -2 * i + 1 if i < 0 else 2 * i
    sh.nmag += 1
    sh.n += 2


cdef void pseudo_pass(Shadow* sh, const EncJob* j) noexcept nogil:
    """CABAC §6.5's pseudo pass: the scan of CABAC §7 with row skipping and block-row resets,
    charging every position's pseudo bins to the estimators (_pseudo_level)."""
    cdef int N = j.N, dq = j.dq
    cdef int64_t rows = j.rows, W = j.W
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base
    cdef int64_t i, b = 0
    cdef int s = 0, cls = 0, h = 0
    cdef const uint8_t* adv0 = NNR_DQ_ADV0[W & 3]
    cdef const int32_t* lv = j.levels
    cdef const int32_t* ref = j.tca
    cdef const uint8_t* hist = j.hist
    cdef int rowskip = j.rowskip_flag
    cdef bint listed = ref == NULL and hist == NULL     # the flags as lists (shadow_flags)
    if rows * W == 0:
        return
    scan_block(rows, W, j.eff_scan, &bh, &bw)
    for br in range(j.n_brows):
        r0 = br * bh
        r1 = scan_end(r0, bh, rows)
        if br > 0:
            shadow_flush(sh)            # the estimators restart; the costs run on
            shadow_reset_all(sh)
            if j.variant == 1:
                cls = 0                 # REF-QUIRK: only NNCodec-1 resets the neighbour here
        c0 = 0
        while c0 < W:
            c1 = scan_end(c0, bw, W)
            for r in range(r0, r1):
                if rowskip and j.skip[r]:
                    # REF-QUIRK: RowWidth parity-0 transitions for a skipped segment (CABAC §7.3)
                    if dq:
                        s = adv0[s]
                    continue
                base = r * W
                for c in range(c0, c1):
                    i = lv[base + c]
                    if ref != NULL:
                        b = ref[base + c]
                    if hist != NULL:
                        h = hist[base + c]
                    if sh.n + N + 40 > SHADOW_CHUNK:    # room for one position's bins
                        shadow_flush(sh)
                    if listed:
                        _pseudo_level_listed(sh, i, s, cls)
                    else:
                        _pseudo_level(sh, i, s, cls, b, h, N)
                    # REF-QUIRK: the pseudo pass's neighbour is i (CABAC §6.5), its DQ state moves
                    # with the level k of CABAC §8.2 (an index of the wrong parity rounded, as in
                    # the coding)
                    cls = neighbour_class(i)
                    if dq:
                        s = NNR_DQ_NEXT[s][dq_level(i, s) & 1]
            c0 = c1
    shadow_flush(sh)
