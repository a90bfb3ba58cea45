# cython: language_level=3
"""The decoder's level loops: steps 6 and 7 of procedure B (CABAC §12), the levels
of one tensor with the binarizations of CABAC §5, the context selection of CABAC §6.2, the scans,
row skipping and block-row resets of CABAC §7 (and the entry points they measure, CABAC §3.8) and
the DQ mapping of CABAC §8.2.

Tensors without TCA, HDSP or codebook take the plain loop (``_levels_plain``: the binarization of
CABAC §5.1 with the context selection 3s + c, 48 + c, 53 + 2j + sign, 53 + 4N + i) on the
64-bit-window engine of ``_wengine.pxd``; the rest take ``_decode_rows`` with ``_decode_level``, the
general binarization, on the CABAC §3 engine of ``_engine.pxd``, which also serves the low-level
API's ``decode_level`` (``decode_one_level``).  Compiled with -falign-functions=64 (setup.py).
"""
from libc.stdint cimport uint8_t, int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from nnr_core.cabac._engine cimport (
    CabacEngine, CabacCtx, NNR_RLPS_TABLE, NNR_CURVE, NNR_DQ_NEXT, NNR_DQ_ADV0,
    cabac_bit_position, cabac_decode_bin, cabac_decode_bypass_bits, cabac_reset_range,
    ctx_reset_all, CTX_SIGN, CTX_GTX, ctx_sig, ctx_sign, ctx_gtx, ctx_rem, num_contexts,
    codebook_bounds, scan_block, scan_end)
from nnr_core.cabac._wengine cimport (
    NNR_RLPS_R4, NNR_CURVE_SH, WinEngine, DCtx, win_from, win_to, win_bit_position, win_bin,
    win_bin_nb, win_norm, win_bypass_bits, dctx_from, dctx_initial, dctx_to, NNR_UNLIKELY,
    nnr_wengine_init)
from nnr_core.cabac._dec_job cimport (
    TensorJob, OVERREAD_BAIL, LEVEL_MAX, ST_OK, ST_OVERREAD, ST_LEVEL_RANGE, ST_RECON_RANGE,
    ST_BAD_RESET, ST_NO_MEMORY)

nnr_wengine_init()


# ---------------------------------------------------------------------------------------------
# Level binarization (CABAC §5.1 / CABAC §5.2) with the context selection of CABAC §6.2.

cdef inline int64_t _decode_level(CabacEngine* e, CabacCtx* ctx, int s, int cls, int64_t b, int h,
                                  int N, int sign_mode, int64_t m_plus,
                                  int64_t m_minus) noexcept nogil:
    """One level k.  sign_mode 0: sign coded, 1: inferred positive, 2: inferred negative.
    m_plus / m_minus: largest |k| per sign (INT64_MAX when unbounded)."""
    cdef int ci, sign, j, flag, i, t
    cdef int64_t v, M
    if not cabac_decode_bin(e, &ctx[ctx_sig(s, cls, b, h)]):
        return 0
    # sign_flag
    if sign_mode == 0:
        sign = cabac_decode_bin(e, &ctx[ctx_sign(cls, b)])
    else:
        sign = sign_mode - 1
    M = m_minus if sign else m_plus
    v = 1
    if M > 1:
        # abs_level_greater_x[j]: one truncated-unary run of at most N flags.
        j = 0
        while True:
            flag = cabac_decode_bin(e, &ctx[ctx_gtx(N, j, sign, b)])
            v += flag
            if not (flag and j < N - 1 and v < M):
                break
            j += 1
        if flag and v < M:
            # abs_remainder: Exp-Golomb-0, context-coded prefix capped at 31 ones (bins 0..30),
            # prefix stop omitted when the next group cannot fit below M (CABAC §5.2).
            ci = ctx_rem(N)
            t = 0
            i = 0
            while True:
                if not cabac_decode_bin(e, &ctx[ci + i]):
                    break
                v += (<int64_t>1) << t
                t += 1
                if not (i < 30 and v + ((<int64_t>1) << t) <= M):
                    break
                i += 1
            v += <int64_t>cabac_decode_bypass_bits(e, t)
    return -v if sign else v


cdef int _decode_rows(CabacEngine* ep, CabacCtx* ctx, TensorJob* j, int64_t br_begin,
                      int64_t br_end, bint entered, int* s_io, int64_t P_prev) noexcept nogil:
    """Steps 6.-7. of procedure B for the block rows br_begin .. br_end - 1, then (if br_end is
    not the last) the start of block row br_end, whose entry point it records.  `entered`: the
    engine already stands at the start of block row br_begin (after its range reset), as an entry
    point puts it; *s_io: the DQ state there; P_prev: its bit position.  Returns ST_*."""
    cdef CabacEngine e                   # the level loop's registers; copied back at the end
    cdef int N = j.N
    cdef int nctx = num_contexts(N)
    cdef int64_t rows = j.rows, W = j.W, n_brows = j.n_brows
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base, P
    cdef int64_t k, i
    cdef int s = s_io[0], cls = 0, h = 0
    cdef int tca = j.tca != NULL
    cdef int sign_mode
    cdef int64_t m_plus, m_minus
    cdef int64_t b = 0
    cdef int rowskip = j.rowskip_flag, dq = j.dq
    cdef const uint8_t* adv0 = NNR_DQ_ADV0[W & 3]
    cdef int32_t* out = j.out
    cdef const int32_t* ref = j.tca
    cdef const uint8_t* hist = j.hist if j.hdsp_flag else NULL

    sign_mode = codebook_bounds(j.cbsize, j.cbzero, &m_plus, &m_minus)
    scan_block(rows, W, j.eff_scan, &bh, &bw)
    # The prelude works on *ep; the level loop on a local copy whose address never escapes the
    # inlined bin functions, so R, V, B and the read pointer live in registers.
    e = ep[0]
    if entered:
        ctx_reset_all(ctx, nctx)          # the block-row reset the entry point stands after
    br = br_begin
    while True:
        if br > 0 and not (entered and br == br_begin):
            if br == n_brows:
                break
            # Block-row start: contexts to their signalled sets, neighbour 0, R = 256;
            # DQ state carried over (CABAC §6.3, CABAC §3.6).
            ctx_reset_all(ctx, nctx)
            cls = 0
            cabac_reset_range(&e)
            if e.V >= (256 << 7):
                ep[0] = e
                return ST_BAD_RESET
            P = cabac_bit_position(&e)
            j.ep[3 * (br - 1)] = P - P_prev
            j.ep[3 * (br - 1) + 1] = e.V >> 7
            j.ep[3 * (br - 1) + 2] = s
            P_prev = P
        if br >= br_end:
            break
        r0 = br * bh
        r1 = scan_end(r0, bh, rows)
        c0 = 0
        while c0 < W:
            c1 = scan_end(c0, bw, W)
            for r in range(r0, r1):
                if e.overread > OVERREAD_BAIL:
                    ep[0] = e
                    return ST_OVERREAD
                if rowskip and j.skip[r]:
                    # Skipped row segment: levels stay 0, neighbour unchanged, DQ advanced by
                    # RowWidth parity-0 transitions (REF-QUIRK for block scans, CABAC §7.3 /
                    # CABAC §15.2).
                    if dq:
                        s = adv0[s]
                    continue
                base = r * W
                if j.no_bins:
                    continue
                for c in range(c0, c1):
                    if e.overread > OVERREAD_BAIL:      # zero bytes past the end: stop here
                        ep[0] = e
                        return ST_OVERREAD
                    if tca:
                        b = ref[base + c]
                    if hist != NULL:
                        h = hist[base + c]
                    k = _decode_level(&e, ctx, s, cls, b, h, N, sign_mode, m_plus, m_minus)
                    if k == 0:
                        cls = 0
                        if dq:
                            s = NNR_DQ_NEXT[s][0]
                        continue
                    if k > LEVEL_MAX or k < -LEVEL_MAX - 1:
                        j.bad_value = k
                        ep[0] = e
                        return ST_LEVEL_RANGE
                    if dq:
                        # Reconstruction index with the state before the transition (CABAC §8.2).
                        if k > 0:
                            i = 2 * k - (s & 1)
                        else:
                            i = 2 * k + (s & 1)
                        if i > LEVEL_MAX or i < -LEVEL_MAX - 1:
                            j.bad_value = i
                            ep[0] = e
                            return ST_RECON_RANGE
                        s = NNR_DQ_NEXT[s][k & 1]
                        out[base + c] = <int32_t>i
                    else:
                        out[base + c] = <int32_t>k
                    cls = 1 if k < 0 else 2
            c0 = c1
        br += 1
    ep[0] = e
    s_io[0] = s
    return ST_OK


# ---------------------------------------------------------------------------------------------
# The plain level loop: no TCA reference, no HDSP history, no codebook bound (sign always coded,
# M unbounded), i.e. the binarization of CABAC §5.1 with the context selection 3s + c, 48 + c,
# 53 + 2j + sign, 53 + 4N + i.  Most tensors take this path; the rest take _decode_rows.

cdef inline int _levels_plain(WinEngine* ep, DCtx* ctx, int32_t* out, int64_t n, int* s_io,
                              int* cls_io, const uint8_t* next, int dq, int N,
                              int64_t* bad) noexcept nogil:
    """n levels of one row segment into out[0..n-1] (zero-initialised).  next: the CABAC §8.1
    transition table, or all zeros without DQ (s stays 0).  Returns ST_*."""
    cdef WinEngine e = ep[0]
    cdef int s = s_io[0], cls = cls_io[0]
    cdef int sign, flag, j, t
    cdef int64_t x, v, a
    cdef DCtx* gtx
    cdef DCtx* rem = ctx + ctx_rem(N)
    for x in range(n):
        if NNR_UNLIKELY(e.overread > OVERREAD_BAIL):    # zero bytes past the end: stop here
            ep[0] = e
            return ST_OVERREAD
        if not win_bin(&e, &ctx[3 * s + cls]):          # sig_flag
            cls = 0
            s = next[2 * s]
            continue
        sign = win_bin_nb(&e, &ctx[CTX_SIGN + cls])    # ~50/50: no branch on it
        # abs_level_greater_x[j]: a truncated-unary run of at most N flags.
        gtx = ctx + CTX_GTX + sign
        v = 1
        j = N
        while True:
            flag = win_bin(&e, gtx)
            v += flag
            j -= 1
            if not flag or j == 0:
                break
            gtx += 2
        if flag:
            # abs_remainder: Exp-Golomb-0, context-coded prefix capped at 31 ones.
            t = 0
            while win_bin(&e, &rem[t]):
                v += (<int64_t>1) << t
                t += 1
                if t == 31:
                    break
            win_norm(&e)
            v += win_bypass_bits(&e, t)
            if v > <int64_t>LEVEL_MAX + sign:
                bad[0] = -v if sign else v
                ep[0] = e
                return ST_LEVEL_RANGE
            a = (v << dq) - (s & 1)
            if a > <int64_t>LEVEL_MAX + sign:
                bad[0] = -a if sign else a
                ep[0] = e
                return ST_RECON_RANGE
        else:
            a = (v << dq) - (s & 1)     # the reconstruction index's magnitude (CABAC §8.2)
        out[x] = <int32_t>(-a if sign else a)
        s = next[2 * s + (v & 1)]
        cls = 2 - sign
    win_norm(&e)
    ep[0] = e
    s_io[0] = s
    cls_io[0] = cls
    return ST_OK


cdef int _decode_rows_plain(CabacEngine* ep, CabacCtx* ctx, TensorJob* j, int64_t br_begin,
                            int64_t br_end, bint entered, int* s_io, int64_t P_prev) noexcept nogil:
    """_decode_rows for a plain tensor, on a WinEngine and DCtx copies of the contexts."""
    cdef WinEngine e
    cdef int N = j.N
    cdef int nctx = num_contexts(N)
    cdef int64_t rows = j.rows, W = j.W, n_brows = j.n_brows
    cdef int64_t r, r0, r1, c0, c1, bh, bw, br, P
    cdef int s = s_io[0], cls = 0, a, status = ST_OK
    cdef int rowskip = j.rowskip_flag, dq = j.dq
    cdef const uint8_t* adv0 = NNR_DQ_ADV0[W & 3]
    cdef uint8_t no_dq[16]
    cdef const uint8_t* next = &NNR_DQ_NEXT[0][0] if dq else no_dq
    cdef DCtx* dctx = <DCtx*>malloc(2 * nctx * sizeof(DCtx))
    cdef DCtx* initial = dctx + nctx
    if dctx == NULL:
        return ST_NO_MEMORY
    memset(no_dq, 0, sizeof(no_dq))
    for a in range(nctx):
        dctx_from(&dctx[a], &ctx[a])
        dctx_initial(&initial[a], &ctx[a])
    scan_block(rows, W, j.eff_scan, &bh, &bw)
    win_from(&e, ep)
    if entered:
        memcpy(dctx, initial, nctx * sizeof(DCtx))
    br = br_begin
    while True:
        if br > 0 and not (entered and br == br_begin):
            if br == n_brows:
                break
            memcpy(dctx, initial, nctx * sizeof(DCtx))
            cls = 0
            e.R = 256
            if (e.V >> 55) >= 256:
                status = ST_BAD_RESET
                break
            P = win_bit_position(&e)
            j.ep[3 * (br - 1)] = P - P_prev
            j.ep[3 * (br - 1) + 1] = <int64_t>(e.V >> 55)
            j.ep[3 * (br - 1) + 2] = s
            P_prev = P
        if br >= br_end:
            break
        r0 = br * bh
        r1 = scan_end(r0, bh, rows)
        c0 = 0
        while c0 < W and status == ST_OK:
            c1 = scan_end(c0, bw, W)
            for r in range(r0, r1):
                if e.overread > OVERREAD_BAIL:
                    status = ST_OVERREAD
                    break
                if rowskip and j.skip[r]:
                    if dq:
                        s = adv0[s]
                    continue
                status = _levels_plain(&e, dctx, j.out + r * W + c0, c1 - c0, &s, &cls, next,
                                       dq, N, &j.bad_value)
                if status != ST_OK:
                    break
            c0 = c1
        if status != ST_OK:
            break
        br += 1
    win_to(&e, ep)
    for a in range(nctx):
        dctx_to(&ctx[a], &dctx[a])
    free(dctx)
    if status == ST_OK:
        s_io[0] = s
    return status


cdef int decode_rows_any(CabacEngine* ep, CabacCtx* ctx, TensorJob* j, int64_t br_begin,
                          int64_t br_end, bint entered, int* s_io, int64_t P_prev) noexcept nogil:
    if j.tca == NULL and not j.hdsp_flag and j.cbsize == 0:
        return _decode_rows_plain(ep, ctx, j, br_begin, br_end, entered, s_io, P_prev)
    return _decode_rows(ep, ctx, j, br_begin, br_end, entered, s_io, P_prev)


cdef int decode_levels_from_start(CabacEngine* ep, CabacCtx* ctx, TensorJob* j) noexcept nogil:
    """Steps 6.-7. for the whole tensor, right after the prelude."""
    cdef int s = 0
    if j.rows * j.W == 0:
        return ST_OK
    if j.eff_scan > 0 and (j.n_brows > 1 or j.variant == 1):
        # REF-QUIRK: NNCodec-1 resets the range also for a single block row (CABAC §11).
        cabac_reset_range(ep)
        if ep.V >= (256 << 7):            # the codeword is not inside the shrunk interval
            return ST_BAD_RESET
    return decode_rows_any(ep, ctx, j, 0, j.n_brows, False, &s, j.P0)

cdef int64_t decode_one_level(CabacEngine* e, CabacCtx* ctx, int s, int cls, int64_t b, int h,
                              int N, int64_t cbsize, int64_t cbzero) noexcept nogil:
    """One level k with the contexts of CABAC §6.2 (the low-level API's decode_level)."""
    cdef int64_t m_plus, m_minus
    cdef int sign_mode = codebook_bounds(cbsize, cbzero, &m_plus, &m_minus)
    return _decode_level(e, ctx, s, cls, b, h, N, sign_mode, m_plus, m_minus)


def _derived_tables_ok():
    """The level loop's tables (_wengine.pxd) agree with Appendix A.1 / A.2 (tests)."""
    cdef int p, x, sh, i, q
    for p in range(32):
        for x in range(8, 32):
            q = (x & 7) if x < 16 else ((x >> 1) & 7)      # x = R >> 4, R < 256 standing for 2R
            if NNR_RLPS_R4[32 * p + x] != NNR_RLPS_TABLE[q][p]:
                return False
    for sh in range(8):
        for i in range(32):
            if NNR_CURVE_SH[32 * sh + i] != NNR_CURVE[i] >> sh:
                return False
    return True
