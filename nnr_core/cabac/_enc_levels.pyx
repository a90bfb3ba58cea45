# cython: language_level=3
"""The encoder's level loops: B.7 of procedure B (CABAC §12, mirrored in CABAC §13), the
levels of one tensor with the binarizations of CABAC §5, the contexts of CABAC §6.2, the scans and
row skipping of CABAC §7 and the DQ mapping i -> k of CABAC §8.2, on the level-loop engine of
``_enc_loop.pxd``.

Tensors without TCA, HDSP or codebook take the plain loop (context selection 3s + c, 48 + c,
53 + 2j + sign, 53 + 4N + i, the binarization of CABAC §5.1 unbounded), tensors with TCA or HDSP but
no codebook the same loop with their context selection chosen by masks (both compiled with and
without DQ), the rest (codebooks) ``_code_level``, the general binarization, which also serves the
low-level API's ``encode_level`` (``code_one_level``).  The plain and masked loops are the
speed copies of ``_code_level`` for the tensors most models consist of.
"""
from libc.stdint cimport uint8_t, int32_t, uint32_t, int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from nnr_core.cabac._engine cimport (
    CabacCtx, NNR_DQ_NEXT, NNR_DQ_ADV0, CTX_SIG_TCA, CTX_SIG_HDSP, CTX_SIGN, CTX_SIGN_TCA_NEG,
    CTX_GTX, ctx_sig, ctx_sign, ctx_gtx, ctx_gtx_tca, ctx_rem, num_contexts, neighbour_class,
    dq_level, codebook_bounds, scan_block, scan_end)
from nnr_core.cabac._enc_engine cimport EncEngine
from nnr_core.cabac._enc_job cimport EncJob, ST_OK, ST_NOMEM
from nnr_core.cabac._enc_loop cimport (
    LoopEngine, LoopOut, LCtx, loop_tables_init, loop_bin, loop_bypass, loop_norm,
    loop_bit_position, loop_from, loop_to, enc_settle, lctx_load, lctx_store, nnr_msb64)

if loop_tables_init() != 0:
    raise ImportError("nnr_core.cabac._enc_levels assumes sh0 = 4..7 in every parameter set")


ctypedef struct WithDQ:
    int unused
ctypedef struct NoDQ:
    int unused
ctypedef fused DQMode:          # compiles each loop once with and once without DQ
    WithDQ
    NoDQ


cdef inline int _code_remainder(LoopEngine* e, LoopOut* o, LCtx* remc, int64_t rem) noexcept nogil:
    """abs_remainder (CABAC §5.1): Exp-Golomb-0, t = floor(log2(rem + 1)) context-coded ones (at
    most 31), the zero, then rem + 1 - 2^t in t bypass bins; returns the regular bins."""
    cdef int u, t = nnr_msb64(<uint64_t>(rem + 1))
    if t > 31:
        t = 31
    for u in range(t):
        loop_bin(e, o, &remc[u], 1)
    if t < 31:
        loop_bin(e, o, &remc[t], 0)
    loop_bypass(e, o, <uint32_t>(rem + 1 - ((<int64_t>1) << t)), t)
    return t + (t < 31)


cdef void _code_plain(DQMode* mode, LoopEngine* ep, LoopOut* o, LCtx* ctx, const EncJob* j,
                      int64_t start, int64_t n, int64_t* s_io, int64_t* cls_io,
                      int64_t* stats) noexcept nogil:
    """The n levels from position `start` on (a row segment or a run of whole rows)."""
    # stats[0] += regular bins, stats[1] += DQ indices of the wrong parity
    cdef const int32_t* lv = j.levels + start
    cdef int N = j.N
    cdef LoopEngine e = ep[0]
    cdef int64_t s = s_io[0], cls = cls_io[0]
    cdef int64_t x, i, a, m, sign
    cdef int64_t bins = 0, rounded = 0
    cdef int u
    cdef LCtx* g
    cdef LCtx* remc = ctx + ctx_rem(N)
    cdef const uint8_t* nxt = &NNR_DQ_NEXT[0][0]
    cdef bint dq = DQMode is WithDQ
    for x in range(n):
        i = lv[x]
        m = i >> 63                     # the sign without a jump: it is a coin toss
        sign = m & 1
        a = (i ^ m) - m
        if dq:
            # CABAC §8.2; REF-QUIRK: an index of the wrong parity is rounded by the same formula
            rounded += (i ^ s) & (i != 0)
            a = (a + (s & 1) + sign) >> 1
        if a == 0:
            loop_bin(&e, o, &ctx[3 * s + cls], 0)               # sig_flag
            bins += 1
            cls = 0
            if dq:
                s = nxt[2 * s]
            continue
        loop_bin(&e, o, &ctx[3 * s + cls], 1)
        loop_bin(&e, o, &ctx[CTX_SIGN + cls], <int>sign)
        # abs_level_greater_x[j]: min(a - 1, N) ones, then a zero if a <= N
        g = ctx + CTX_GTX + sign
        if a <= N:
            for u in range(<int>a - 1):
                loop_bin(&e, o, g, 1)
                g += 2
            loop_bin(&e, o, g, 0)
            bins += 2 + a
        else:
            for u in range(N):
                loop_bin(&e, o, g, 1)
                g += 2
            bins += 2 + N + _code_remainder(&e, o, remc, a - (N + 1))
        cls = 2 - sign
        if dq:
            s = nxt[2 * s + (a & 1)]
    ep[0] = e
    s_io[0] = s
    cls_io[0] = cls
    stats[0] += bins
    stats[1] += rounded


cdef void _code_tools(DQMode* mode, LoopEngine* ep, LoopOut* o, LCtx* ctx, const EncJob* j,
                      int64_t start, int64_t n, int64_t* s_io, int64_t* cls_io,
                      int64_t* stats) noexcept nogil:
    """_code_plain with TCA reference and / or HDSP history: CABAC §6.2's contexts without jumps."""
    cdef const int32_t* lv = j.levels + start
    cdef const int32_t* ref = j.tca + start if j.tca != NULL else NULL
    cdef const uint8_t* hist = j.hist + start if j.hist != NULL else NULL
    cdef int N = j.N
    cdef LoopEngine e = ep[0]
    cdef int64_t s = s_io[0], cls = cls_io[0]
    cdef int64_t x, i, a, m, sign, b, ab, tca, h, sc, gc, over, u
    cdef int64_t bins = 0, rounded = 0
    cdef LCtx* remc = ctx + ctx_rem(N)
    cdef bint dq = DQMode is WithDQ
    for x in range(n):
        i = lv[x]
        m = i >> 63
        sign = m & 1
        a = (i ^ m) - m
        if dq:
            # CABAC §8.2; REF-QUIRK: an index of the wrong parity is rounded by the same formula
            rounded += (i ^ s) & (i != 0)
            a = (a + (s & 1) + sign) >> 1
        b = ref[x] if ref != NULL else 0
        h = hist[x] if hist != NULL else 0
        m = b >> 63
        ab = (b ^ m) - m
        tca = -(b != 0)                 # all ones with a TCA reference level
        # sig_flag: HDSP, then TCA, then the neighbour class (ctx_sig)
        sc = (3 * s + cls) ^ (((3 * s + cls) ^ (CTX_SIG_TCA + 2 * s + (ab > 1))) & tca)
        sc = sc ^ ((sc ^ (CTX_SIG_HDSP + s)) & -(h != 0))
        if a == 0:
            loop_bin(&e, o, &ctx[sc], 0)
            bins += 1
            cls = 0
            if dq:
                s = NNR_DQ_NEXT[s][0]
            continue
        loop_bin(&e, o, &ctx[sc], 1)
        # sign_flag (ctx_sign)
        loop_bin(&e, o, &ctx[(CTX_SIGN + cls) ^ (((CTX_SIGN + cls) ^ (CTX_SIGN_TCA_NEG + (b > 0)))
                                                & tca)], <int>sign)
        # abs_level_greater_x[j] (ctx_gtx): 53 + 2j + sign, or with TCA 53 + 2N + 2j + (j > |b|)
        gc = (CTX_GTX + sign) ^ (((CTX_GTX + sign) ^ ctx_gtx_tca(N)) & tca)
        over = ab | (~tca & INT64_MAX)  # j > over never holds without TCA
        if a <= N:
            for u in range(a - 1):
                loop_bin(&e, o, &ctx[gc + 2 * u + (u > over)], 1)
            loop_bin(&e, o, &ctx[gc + 2 * (a - 1) + (a - 1 > over)], 0)
            bins += 2 + a
        else:
            for u in range(N):
                loop_bin(&e, o, &ctx[gc + 2 * u + (u > over)], 1)
            bins += 2 + N + _code_remainder(&e, o, remc, a - (N + 1))
        cls = 2 - sign
        if dq:
            s = NNR_DQ_NEXT[s][a & 1]
    ep[0] = e
    s_io[0] = s
    cls_io[0] = cls
    stats[0] += bins
    stats[1] += rounded


ctypedef void (*LoopFn)(void*, LoopEngine*, LoopOut*, LCtx*, const EncJob*, int64_t, int64_t,
                        int64_t*, int64_t*, int64_t*) noexcept nogil


cdef inline void _code_level(LoopEngine* e, LoopOut* o, LCtx* ctx, int64_t k, int s, int cls,
                             int64_t b, int h, int N, int sign_mode, int64_t m_plus,
                             int64_t m_minus, int64_t* bins) noexcept nogil:
    """One level k (CABAC §5.1 / CABAC §5.2) with the contexts of CABAC §6.2: exactly the bins the
    decoder's _decode_level reads.  sign_mode 0: sign coded, 1 / 2: inferred positive / negative;
    m_plus / m_minus: largest |k| per sign (codebook_bounds)."""
    cdef int ci, sign, j, flag = 0, i, t, pbin
    cdef int64_t v, M, a
    loop_bin(e, o, &ctx[ctx_sig(s, cls, b, h)], 1 if k != 0 else 0)
    bins[0] += 1
    if k == 0:
        return
    sign = 1 if k < 0 else 0
    a = -k if sign else k
    if sign_mode == 0:
        loop_bin(e, o, &ctx[ctx_sign(cls, b)], sign)
        bins[0] += 1
    M = m_minus if sign else m_plus
    v = 1
    if M > 1:
        j = 0
        while True:
            flag = 1 if a > v else 0
            loop_bin(e, o, &ctx[ctx_gtx(N, j, sign, b)], flag)
            bins[0] += 1
            v += flag
            if not (flag and j < N - 1 and v < M):
                break
            j += 1
        if flag and v < M:
            # abs_remainder: prefix bin i is 1 while another group of 2^t still fits below |k|.
            ci = ctx_rem(N)
            t = 0
            i = 0
            while True:
                pbin = 1 if a - v >= ((<int64_t>1) << t) else 0
                loop_bin(e, o, &ctx[ci + i], pbin)
                bins[0] += 1
                if pbin:
                    v += (<int64_t>1) << t
                    t += 1
                if not (pbin and i < 30 and v + ((<int64_t>1) << t) <= M):
                    break
                i += 1
            loop_bypass(e, o, <uint32_t>(a - v), t)


cdef int code_levels(EncEngine* ep, CabacCtx* ctx, EncJob* j) noexcept nogil:
    """B.7, the real coding: the scan of CABAC §7 with row skipping and block-row resets (as the
    pseudo pass's walk), on the level-loop engine; returns ST_*."""
    cdef LoopEngine e
    cdef LoopOut o
    cdef int N = j.N, dq = j.dq
    cdef int nctx = num_contexts(N)
    cdef int64_t rows = j.rows, W = j.W
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base, i, k, run, b = 0
    cdef int64_t s = 0, cls = 0
    cdef bint full
    cdef int h = 0
    cdef int sign_mode
    cdef int64_t m_plus, m_minus
    cdef int64_t stats[2]
    cdef const uint8_t* adv0 = NNR_DQ_ADV0[W & 3]
    cdef const int32_t* lv = j.levels
    cdef const int32_t* ref = j.tca
    cdef const uint8_t* hist = j.hist
    cdef int rowskip = j.rowskip_flag
    cdef int fast = j.cbsize == 0 and not j.no_bins
    cdef LoopFn fast_fn
    cdef LCtx* lctx
    cdef LCtx* initial
    # called through a pointer: the loop keeps registers of its own instead of being inlined here
    if ref == NULL and hist == NULL:
        fast_fn = <LoopFn>_code_plain[WithDQ] if dq else <LoopFn>_code_plain[NoDQ]
    else:
        fast_fn = <LoopFn>_code_tools[WithDQ] if dq else <LoopFn>_code_tools[NoDQ]
    if rows * W == 0:
        return ST_NOMEM if enc_settle(ep) != 0 else ST_OK
    lctx = <LCtx*>malloc(2 * nctx * sizeof(LCtx))
    if lctx == NULL:
        return ST_NOMEM
    initial = lctx + nctx
    if loop_from(&e, &o, ep) != 0:
        free(lctx)
        return ST_NOMEM
    lctx_load(lctx, initial, ctx, nctx)
    stats[0] = 0
    stats[1] = 0
    sign_mode = codebook_bounds(j.cbsize, j.cbzero, &m_plus, &m_minus)
    scan_block(rows, W, j.eff_scan, &bh, &bw)
    for br in range(j.n_brows):
        r0 = br * bh
        r1 = scan_end(r0, bh, rows)
        if br > 0:
            memcpy(lctx, initial, nctx * sizeof(LCtx))
            cls = 0
            loop_norm(&e)
            e.R = 256                   # range reset (CABAC §3.6)
            # the entry point's raw material (CABAC §3.8): bit position and low register here
            j.epw[3 * (br - 1)] = loop_bit_position(&e, &o)
            j.epw[3 * (br - 1) + 1] = <int64_t>(e.L & 511)
            j.epw[3 * (br - 1) + 2] = s
        c0 = 0
        while c0 < W:
            c1 = scan_end(c0, bw, W)
            # whole rows (scan order 0): a run of rows up to the next skipped one in one call
            full = fast and c1 - c0 == W
            run = r0
            for r in range(r0, r1):
                if rowskip and j.skip[r]:
                    if full and run < r:
                        fast_fn(NULL, &e, &o, lctx, j, run * W, (r - run) * W, &s, &cls, stats)
                    run = r + 1
                    # REF-QUIRK: RowWidth parity-0 transitions for a skipped segment (CABAC §7.3)
                    if dq:
                        s = adv0[s]
                    continue
                if full:
                    continue
                base = r * W
                if fast:
                    fast_fn(NULL, &e, &o, lctx, j, base + c0, c1 - c0, &s, &cls, stats)
                    continue
                for c in range(c0, c1):
                    i = lv[base + c]
                    k = i
                    if dq and i != 0:
                        # CABAC §8.2 mapping. REF-QUIRK: an index of the wrong parity for Q(s & 1)
                        # (the reference clips TCQ output in bit-depth mode and assumes one
                        # transition per skipped position) is rounded by the same formula, as
                        # NNCodec does.
                        k = dq_level(i, <int>s)
                        if ((i ^ s) & 1) != 0:
                            stats[1] += 1
                    if ref != NULL:
                        b = ref[base + c]
                    if hist != NULL:
                        h = hist[base + c]
                    if not j.no_bins:
                        _code_level(&e, &o, lctx, k, <int>s, <int>cls, b, h, N, sign_mode,
                                    m_plus, m_minus, &stats[0])
                    cls = neighbour_class(k)
                    if dq:
                        s = NNR_DQ_NEXT[s][k & 1]
            if full and run < r1:
                fast_fn(NULL, &e, &o, lctx, j, run * W, (r1 - run) * W, &s, &cls, stats)
            c0 = c1
    loop_to(&e, &o, ep)
    lctx_store(ctx, lctx, nctx)
    free(lctx)
    ep.bins += stats[0]
    j.rounded += stats[1]
    return ST_OK


cdef int code_one_level(EncEngine* ep, CabacCtx* ctx, Py_ssize_t nctx, int64_t k, int s, int cls,
                        int64_t b, int h, int N, int64_t cbsize, int64_t cbzero) noexcept nogil:
    """One level k with the contexts of CABAC §6.2 (the low-level API's encode_level): the
    CABAC §3.7 registers and contexts 0..nctx-1 taken over by the level-loop engine and handed back
    (in the form every tensor ends in, enc_settle's); returns ST_*."""
    cdef LoopEngine e
    cdef LoopOut o
    cdef int64_t m_plus, m_minus, bins = 0
    cdef int sign_mode = codebook_bounds(cbsize, cbzero, &m_plus, &m_minus)
    cdef LCtx* lctx = <LCtx*>malloc(nctx * sizeof(LCtx))
    if lctx == NULL:
        return ST_NOMEM
    if loop_from(&e, &o, ep) != 0:
        free(lctx)
        return ST_NOMEM
    lctx_load(lctx, NULL, ctx, nctx)
    _code_level(&e, &o, lctx, k, s, cls, b, h, N, sign_mode, m_plus, m_minus, &bins)
    loop_to(&e, &o, ep)
    lctx_store(ctx, lctx, nctx)
    free(lctx)
    ep.bins += bins
    return ST_NOMEM if ep.oom else ST_OK
