# cython: language_level=3
"""DeepCABAC payload encoder, bit-exact with NNCodec 2.1.3 (variant 2) and NNCodec 1.x
(variant 1): the encoding engine of NNC-CABAC-QUANT.md §3.7 and the mirror of procedure B of §12
(§13), with the binarizations of §5, the contexts of §6 (NNCodec-2 layout), NNCodec's choice of
the context parameter sets (§6.5, bit estimates of §4.6), the scans and row skipping of §7 and the
DQ mapping i -> k of §8.2.  API contract: ``nnr_core/cabac/README.md``; pure-Python twin:
``pytwin_enc.py`` (which also holds the argument checks both use).

Arguments are checked with the GIL; the per-tensor procedure, including the pseudo pass of the
parameter-set optimisation (the pass emits (context, bin) pairs in bounded chunks, which
``_shadow.pxd`` runs through all nine estimators of each context), runs ``with nogil`` on C pointers and reports a status code that is
turned into an exception afterwards.  Output bytes go into a growable C buffer.
"""
from libc.stdint cimport uint8_t, uint16_t, int16_t, int32_t, uint32_t, int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset

import operator

import numpy as np
cimport numpy as cnp

from nnr.errors import EncoderConfigError
from nnr_core.cabac.bitcost import BIT_COST
from nnr_core.cabac.pytwin_enc import prepare, _has_entry_points
from nnr_core.cabac.pytwin_levels import check_codebook

from nnr_core.cabac._engine cimport (
    CabacCtx, NNR_RLPS_TABLE, NNR_CURVE, NNR_PARAM_SETS, NNR_DQ_NEXT, NNR_DQ_ADV0,
    nnr_renorm_shift, ctx_set, ctx_reset_all, ctx_init_all, ctx_update,
    CTX_SIG, CTX_SIG_TCA, CTX_SIG_HDSP, CTX_SIGN, CTX_SIGN_TCA_NEG, CTX_SIGN_TCA_POS, CTX_GTX,
    SIGNAL_MAX, signalled_contexts, ctx_sig, ctx_sign, ctx_gtx)
from nnr_core.cabac._shadow cimport (
    NnrShadowCtx, Shadow, SHADOW_CHUNK, nnr_floor_log2, nnr_shadow_init, nnr_shadow_reset, nnr_shadow_run, shadow_emit, shadow_flush)

from nnr_core.cabac._contexts cimport ContextMemory
cnp.import_array()

__all__ = ["encode_payload", "CabacEncoder", "regular_bins_coded"]

# Regular bins coded by every finished CabacEncoder of this process (statistics for benchmarks;
# updated with the GIL held).
cdef int64_t _regular_bins_total = 0


def regular_bins_coded():
    """Regular bins coded so far by all finished encoders of this process."""
    return _regular_bins_total

cdef enum:
    ST_OK = 0
    ST_NOMEM = 1

cdef enum:
    NUM_SETS = 9
    SET_PENALTY = 3 * 32768     # §6.5 step 4: sets 1..8 pay for their three bypass bins


# §4.6 bit estimates, filled once from nnr_core.cabac.bitcost (built from the formula).
cdef uint32_t BITCOST[1024][2]
cdef Py_ssize_t _x
for _x in range(1024):
    BITCOST[_x][0] = BIT_COST[_x, 0]
    BITCOST[_x][1] = BIT_COST[_x, 1]


# ---------------------------------------------------------------------------------------------
# Encoding engine (§3.7).

ctypedef struct EncEngine:
    uint32_t L              # low register, modulo 2^32
    uint32_t R              # range, 256..510 between bins
    int32_t BL              # bits left; a byte is written when it drops below 12
    int64_t NB              # buffered bytes (the first is `buffered`, the rest 0xFF)
    uint32_t buffered
    uint8_t* buf            # output, growable
    int64_t size
    int64_t cap
    int oom                 # a realloc failed; the output is incomplete
    int64_t bins            # regular bins coded (statistics: benchmarks' ns per bin)


cdef int enc_reserve(EncEngine* e, int64_t extra) noexcept nogil:
    """Make room for `extra` more bytes (checked realloc, geometric growth)."""
    cdef int64_t want = e.size + extra
    cdef int64_t cap
    cdef uint8_t* p
    if want <= e.cap:
        return 0
    cap = e.cap * 2
    if cap < want + 256:
        cap = want + 256
    p = <uint8_t*>realloc(e.buf, <size_t>cap)
    if p == NULL:
        e.oom = 1
        return -1
    e.buf = p
    e.cap = cap
    return 0


cdef void enc_write_out(EncEngine* e) noexcept nogil:
    """Byte output with carry handling: 0xFF bytes stay pending until the carry is known."""
    cdef uint32_t lead = e.L >> (24 - e.BL)
    cdef uint32_t carry
    cdef uint8_t fill
    e.BL += 8
    e.L &= 0xFFFFFFFFu >> e.BL
    if lead == 0xFF:
        e.NB += 1
    elif e.NB > 0:
        if enc_reserve(e, e.NB) != 0:
            return
        carry = lead >> 8
        e.buf[e.size] = <uint8_t>((e.buffered + carry) & 0xFF)
        e.size += 1
        e.buffered = lead & 0xFF
        fill = <uint8_t>((0xFF + carry) & 0xFF)
        while e.NB > 1:
            e.buf[e.size] = fill
            e.size += 1
            e.NB -= 1
    else:
        e.NB = 1
        e.buffered = lead


cdef inline void enc_bin(EncEngine* e, CabacCtx* c, int bin) noexcept nogil:
    """Regular bin (§3.7) followed by the context update (§4.4)."""
    cdef int S = c.S
    cdef int p = S >> 7                 # arithmetic shift, as in the decoder
    cdef uint32_t rlps
    cdef int n
    if p < 0:
        p = -p
    e.bins += 1
    rlps = NNR_RLPS_TABLE[(e.R >> 5) & 7][p]
    e.R -= rlps
    if bin == (1 if S >= 0 else 0):     # MPS: rMPS >= 128, at most one shift
        if e.R < 256:
            e.R <<= 1
            e.L <<= 1
            e.BL -= 1
            if e.BL < 12:
                enc_write_out(e)
    else:
        n = nnr_renorm_shift(rlps)
        e.L += e.R
        e.R = rlps << n
        e.L <<= n
        e.BL -= n
        if e.BL < 12:
            enc_write_out(e)
    ctx_update(c, bin)


cdef inline int64_t enc_bit_position(const EncEngine* e) noexcept nogil:
    """§3.8 P as the decoder will count it: every shift of L is one shift of the decoder's V.
    Each write_out takes one byte out of L (buffered, pending 0xFF or written): size + NB."""
    return 23 - e.BL + 8 * (e.size + e.NB)


cdef inline void enc_bypass_bits(EncEngine* e, uint64_t value, int n) noexcept nogil:
    """n bypass bins (0..64), most significant first."""
    cdef int x
    for x in range(n - 1, -1, -1):
        e.L <<= 1
        if (value >> x) & 1:
            e.L += e.R
        e.BL -= 1
        if e.BL < 12:
            enc_write_out(e)


cdef inline void enc_terminate(EncEngine* e, int bin) noexcept nogil:
    e.R -= 2
    if bin:
        e.L += e.R
        e.L <<= 7
        e.R = 256
        e.BL -= 7
    elif e.R < 256:
        e.R <<= 1
        e.L <<= 1
        e.BL -= 1
    else:
        return
    if e.BL < 12:
        enc_write_out(e)


cdef void enc_flush(EncEngine* e) noexcept nogil:
    """§3.7 flush after the terminating bin: pending bytes, the low register, stop bit, zeros."""
    cdef uint32_t low
    cdef int nbits, x
    if enc_reserve(e, e.NB + 8) != 0:
        return
    if (e.L >> (32 - e.BL)) != 0:           # pending carry
        e.buf[e.size] = <uint8_t>((e.buffered + 1) & 0xFF)
        e.size += 1
        while e.NB > 1:
            e.buf[e.size] = 0x00
            e.size += 1
            e.NB -= 1
        e.L -= (<uint32_t>1) << (32 - e.BL)
    else:
        if e.NB > 0:
            e.buf[e.size] = <uint8_t>e.buffered
            e.size += 1
        while e.NB > 1:
            e.buf[e.size] = 0xFF
            e.size += 1
            e.NB -= 1
    e.NB = 0
    low = ((e.L >> 8) << 1) + 1
    nbits = 24 - (e.BL - 1)
    low <<= (32 - nbits)
    x = 0
    while x < nbits:
        e.buf[e.size] = <uint8_t>((low >> (24 - x)) & 0xFF)
        e.size += 1
        x += 8


# ---------------------------------------------------------------------------------------------
# The parameter-set choice (§6.5): nine shadow estimators per context (_shadow.pxd).

if nnr_shadow_init(&NNR_CURVE[0], &NNR_PARAM_SETS[0][0], &BITCOST[0][0]) != 0:
    raise ImportError("nnr_core.cabac._shadow assumes other parameter-set shifts than _engine.pxd's")


cdef inline int shadow_best(const NnrShadowCtx* m) noexcept nogil:
    """Cheapest set; sets 1..8 charged 3 bits extra; the first minimum wins (§6.5.4)."""
    cdef int k, best = 0
    cdef uint64_t best_cost = m.cost[0]
    for k in range(1, NUM_SETS):
        if m.cost[k] + SET_PENALTY < best_cost:
            best = k
            best_cost = m.cost[k] + SET_PENALTY
    return best


cdef inline void shadow_reset_all(Shadow* sh) noexcept nogil:
    cdef int x
    for x in range(sh.nctx):
        nnr_shadow_reset(&sh.m[x], &NNR_PARAM_SETS[0][0])


cdef Shadow* shadow_new(int nctx, int N) noexcept nogil:
    """The pseudo pass's scratch with every estimator at its initial state; NULL if out of memory."""
    cdef Shadow* sh = <Shadow*>calloc(1, sizeof(Shadow))
    cdef int c
    if sh == NULL:
        return NULL
    sh.nctx = nctx
    sh.N = N
    sh.ctx_gtx = CTX_GTX
    sh.ctx_rem = CTX_GTX + 4 * N
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
    nnr_shadow_reset(&m, &NNR_PARAM_SETS[0][0])
    if bins.shape[0] > 0:
        nnr_shadow_run(&m, &bins[0], bins.shape[0])
    return [m.cost[k] for k in range(NUM_SETS)], [m.S0[k] for k in range(NUM_SETS)], \
        [m.S1[k] for k in range(NUM_SETS)]


# ---------------------------------------------------------------------------------------------
# Levels (§5, §6.2).

cdef inline void _enc_level(EncEngine* e, CabacCtx* ctx, int64_t k, int s, int cls, int64_t b,
                            int h, int N, int sign_mode, int64_t m_plus,
                            int64_t m_minus) noexcept nogil:
    """One level k, writing exactly the bins the decoder's _decode_level reads.  sign_mode 0:
    sign coded, 1/2: inferred positive/negative; m_plus/m_minus: largest |k| per sign."""
    cdef int ci, sign, j, flag = 0, i, t, pbin
    cdef int64_t v, M, a
    enc_bin(e, &ctx[ctx_sig(s, cls, b, h)], 1 if k != 0 else 0)
    if k == 0:
        return
    sign = 1 if k < 0 else 0
    a = -k if sign else k
    if sign_mode == 0:
        enc_bin(e, &ctx[ctx_sign(cls, b)], sign)
    M = m_minus if sign else m_plus
    v = 1
    if M > 1:
        j = 0
        while True:
            flag = 1 if a > v else 0
            enc_bin(e, &ctx[ctx_gtx(N, j, sign, b)], flag)
            v += flag
            if not (flag and j < N - 1 and v < M):
                break
            j += 1
        if flag and v < M:
            # abs_remainder: prefix bin i is 1 while another group of 2^t still fits below |k|.
            ci = CTX_GTX + 4 * N
            t = 0
            i = 0
            while True:
                pbin = 1 if a - v >= ((<int64_t>1) << t) else 0
                enc_bin(e, &ctx[ci + i], pbin)
                if pbin:
                    v += (<int64_t>1) << t
                    t += 1
                if not (pbin and i < 30 and v + ((<int64_t>1) << t) <= M):
                    break
                i += 1
            enc_bypass_bits(e, <uint64_t>(a - v), t)


cdef inline void _pseudo_level(Shadow* sh, int64_t i, int s, int cls, int64_t b, int h,
                               int N) noexcept nogil:
    """Pseudo-code one position (§6.5).  REF-QUIRK: NNCodec binarizes the reconstruction index i,
    always unbounded (§5.1), without the bypass suffix."""
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
    t = nnr_floor_log2(<uint64_t>(a - N))
    ci = CTX_GTX + 4 * N
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


# ---------------------------------------------------------------------------------------------
# The per-tensor procedure (§12 procedure B, mirrored).

ctypedef struct EncJob:
    int64_t rows
    int64_t W
    int N
    int dq
    int eff_scan
    int64_t n_brows
    int variant
    int edition2_flags
    int parent
    int hdsp_flag
    int rowskip_flag
    int qp_bits
    int64_t qp_offset
    int no_bins
    int param_opt
    int tca_on
    int64_t cbsize
    int64_t cbzero
    const int32_t* levels
    const int32_t* tca
    const uint8_t* hist
    const uint8_t* skip
    int64_t* epw            # per block row after the first: P, L, DQ state after its range reset
    int64_t P0              # bit position where block row 0 starts
    int64_t rounded         # DQ indices of the wrong parity (rounded to a level, REF-QUIRK below)


cdef int _walk(EncEngine* ep, CabacCtx* ctx, Shadow* sh, EncJob* j) noexcept nogil:
    """B.7: the scan of §7 with row skipping and block-row resets; with `sh` the pseudo pass of
    §6.5 (estimates only), otherwise the real coding of the levels."""
    cdef EncEngine e = ep[0]            # registers stay local in the hot loop
    cdef int N = j.N, dq = j.dq, pseudo = sh != NULL
    cdef int nctx = 90 + 4 * N
    cdef int64_t rows = j.rows, W = j.W
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base, x
    cdef int64_t i, k, b = 0
    cdef int s = 0, cls = 0, h = 0
    cdef int sign_mode = 0
    cdef int64_t m_plus = INT64_MAX, m_minus = INT64_MAX
    cdef const uint8_t* adv0 = NNR_DQ_ADV0[W & 3]
    cdef const int32_t* lv = j.levels
    cdef const int32_t* ref = j.tca
    cdef const uint8_t* hist = j.hist
    cdef int rowskip = j.rowskip_flag
    cdef bint listed = ref == NULL and hist == NULL     # the pseudo pass's flags as lists

    if j.cbsize > 0:
        m_plus = j.cbsize - 1 - j.cbzero
        m_minus = j.cbzero
        if j.cbzero == 0:
            sign_mode = 1
        elif j.cbzero == j.cbsize - 1:
            sign_mode = 2
    if rows * W == 0:
        return ST_OK
    if j.eff_scan == 0:
        bh = rows
        bw = W
    else:
        bh = 4 << j.eff_scan
        bw = bh
    for br in range(j.n_brows):
        r0 = br * bh
        r1 = r0 + bh
        if r1 > rows:
            r1 = rows
        if br > 0:
            if pseudo:
                shadow_flush(sh)        # the estimators restart; the costs run on
                shadow_reset_all(sh)
                if j.variant == 1:
                    cls = 0             # REF-QUIRK: only NNCodec-1 resets the neighbour here
            else:
                ctx_reset_all(ctx, nctx)
                cls = 0
                e.R = 256               # range reset (§3.6)
                # the entry point's raw material (§3.8): bit position and low register here;
                # the arithmetic value follows from the finished payload (entry_points_from)
                j.epw[3 * (br - 1)] = enc_bit_position(&e)
                j.epw[3 * (br - 1) + 1] = e.L
                j.epw[3 * (br - 1) + 2] = s
        c0 = 0
        while c0 < W:
            c1 = c0 + bw
            if c1 > W:
                c1 = W
            for r in range(r0, r1):
                if rowskip and j.skip[r]:
                    # REF-QUIRK: RowWidth parity-0 transitions for a skipped segment (§7.3)
                    if dq:
                        s = adv0[s]
                    continue
                base = r * W
                for c in range(c0, c1):
                    i = lv[base + c]
                    k = i
                    if dq and i != 0:
                        # §8.2 mapping. REF-QUIRK: an index of the wrong parity for Q(s & 1) (the
                        # reference clips TCQ output in bit-depth mode and assumes one transition
                        # per skipped position) is rounded by the same formula, as NNCodec does.
                        if i > 0:
                            k = (i + (s & 1)) >> 1
                        else:
                            k = (i - (s & 1)) >> 1
                        if not pseudo and ((i ^ s) & 1) != 0:
                            j.rounded += 1      # i's parity is not the one Q(s & 1) produces
                    if ref != NULL:
                        b = ref[base + c]
                    if hist != NULL:
                        h = hist[base + c]
                    if pseudo:
                        if sh.n + N + 40 > SHADOW_CHUNK:    # room for one position's bins
                            shadow_flush(sh)
                        if listed:
                            _pseudo_level_listed(sh, i, s, cls)
                        else:
                            _pseudo_level(sh, i, s, cls, b, h, N)
                    elif not j.no_bins:
                        _enc_level(&e, ctx, k, s, cls, b, h, N, sign_mode, m_plus, m_minus)
                    if pseudo:          # REF-QUIRK: the pseudo pass's neighbour is i (§6.5)
                        cls = 0 if i == 0 else (1 if i < 0 else 2)
                    else:
                        cls = 0 if k == 0 else (1 if k < 0 else 2)
                    if dq:
                        s = NNR_DQ_NEXT[s][k & 1]
            c0 = c1
    if pseudo:
        shadow_flush(sh)
    ep[0] = e
    return ST_OK


cdef inline void _signal_one(EncEngine* e, CabacCtx* ctx, const Shadow* sh, int idx,
                             bint coded, int flag_ctx) noexcept nogil:
    cdef int k = 0
    if coded:
        if sh != NULL:
            k = shadow_best(&sh.m[idx])
        enc_bin(e, &ctx[flag_ctx], 1 if k else 0)          # param_set_flag
        if k:
            enc_bypass_bits(e, <uint64_t>(k - 1), 3)        # param_set_idx_minus1
    ctx_set(&ctx[idx], k)


cdef void _signal_params(EncEngine* e, CabacCtx* ctx, const Shadow* sh, EncJob* j) noexcept nogil:
    """Context parameter-set signalling (§6.4), both variants: the decoder's list, in order."""
    cdef int32_t idx[SIGNAL_MAX]
    cdef uint8_t coded[SIGNAL_MAX]
    cdef int a, n = signalled_contexts(idx, coded, j.N, j.dq, j.tca_on, j.hdsp_flag, j.cbsize, j.cbzero,
                                       j.variant)
    cdef int flag_ctx = 87 + 4 * j.N
    for a in range(n):
        _signal_one(e, ctx, sh, idx[a], coded[a], flag_ctx)


cdef int _encode_tensor_c(EncEngine* e, CabacCtx* ctx, Shadow* sh, EncJob* j) noexcept nogil:
    """Procedure B of §12, mirrored (§13 step 3).  Returns a status code (ST_*)."""
    cdef int N = j.N
    cdef int nctx = 90 + 4 * N
    cdef int64_t r
    cdef int x, status
    # 1. qp_offset: 6 + QpDensity bypass bins, two's complement.
    if j.qp_bits:
        enc_bypass_bits(e, (<uint64_t>j.qp_offset) & (((<uint64_t>1) << j.qp_bits) - 1),
                        j.qp_bits)
    # 2.-3. context memory, all set 0.
    ctx_init_all(ctx, nctx)
    # 4. edition-2 flags and the row-skip list.
    if j.edition2_flags:
        if j.parent:
            enc_bypass_bits(e, j.hdsp_flag, 1)
        enc_bypass_bits(e, j.rowskip_flag, 1)
        if j.rowskip_flag:
            for r in range(j.rows):
                enc_bin(e, &ctx[89 + 4 * N], j.skip[r])
    # 5. parameter sets: NNCodec's pseudo pass (§6.5), then the signalling (§6.4).
    if sh != NULL:
        status = _walk(e, ctx, sh, j)
        if status != ST_OK:
            return status
    _signal_params(e, ctx, sh, j)
    j.P0 = enc_bit_position(e)
    # 6. range reset; REF-QUIRK: NNCodec-1 resets also for a single block row (§11).
    if j.eff_scan > 0 and (j.n_brows > 1 or j.variant == 1):
        e.R = 256
    # 7. levels.
    status = _walk(e, ctx, NULL, j)
    if status == ST_OK and e.oom:
        return ST_NOMEM
    return status


# ---------------------------------------------------------------------------------------------

cdef class CabacEncoder(ContextMemory):
    """One arithmetic codeword (an NDU payload) being written, and its context memory."""

    cdef EncEngine eng
    cdef bint finished
    cdef public list entry_raw        # per tensor: (P0, int64[(block rows - 1) * 3]) or None
    cdef public int64_t rounded       # DQ indices of the wrong parity coded so far

    def __cinit__(self):
        self.entry_raw = []
        self.rounded = 0
        self.finished = False
        memset(&self.eng, 0, sizeof(EncEngine))
        self.eng.R = 510                  # §3.7: L = 0, R = 510, BL = 23, NB = 0
        self.eng.BL = 23
        self.eng.buf = NULL
        if enc_reserve(&self.eng, 256) != 0:
            raise MemoryError()

    def __dealloc__(self):
        if self.eng.buf != NULL:
            free(self.eng.buf)

    cdef _check_open(self):
        if self.finished:
            raise EncoderConfigError("the encoder has already been finished")
        if self.eng.oom:
            raise MemoryError("cannot grow the payload buffer")

    # -- low-level API ----------------------------------------------------------------------
    cdef int _check_param_set(self, k) except -1:
        raise EncoderConfigError(f"parameter set {k} outside 0..8")

    def encode_bin(self, ctx, bin):
        cdef Py_ssize_t c = self._check_ctx(ctx)
        self._check_open()
        enc_bin(&self.eng, &self.ctx[c], 1 if bin else 0)

    def encode_bypass(self, value, n):
        value = operator.index(value)
        n = operator.index(n)
        if n < 1 or n > 32 or value < 0 or value >= (1 << n):
            raise EncoderConfigError(f"bypass value {value} does not fit {n} bins (n 1..32)")
        self._check_open()
        enc_bypass_bits(&self.eng, <uint64_t>value, n)

    def encode_terminate(self, bin):
        self._check_open()
        enc_terminate(&self.eng, 1 if bin else 0)

    def reset_range(self):
        self.eng.R = 256

    def encode_level(self, k, dq_state, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
        cdef int64_t k_ = operator.index(k)
        cdef int s = operator.index(dq_state)
        cdef int n_ = operator.index(N)
        cdef int64_t cbs = operator.index(codebook_size)
        cdef int64_t cbz = operator.index(cb_zero_offset)
        cdef int64_t bb = operator.index(b)
        cdef int sign_mode = 0
        cdef int64_t m_plus = INT64_MAX, m_minus = INT64_MAX
        nb = operator.index(neighbour)
        if s < 0 or s > 7:
            raise ValueError("dq_state must be 0..7")
        if n_ < 1 or n_ > 256:
            raise ValueError("N must be 1..256")
        if self.nctx < 90 + 4 * n_:
            raise ValueError(f"context memory holds {self.nctx} contexts, needs {90 + 4 * n_}")
        if bb < -2147483648 or bb > 2147483647:
            raise ValueError("b must fit int32")
        if k_ < -2147483647 or k_ > 2147483647:
            raise EncoderConfigError(f"level {k_} does not fit int32")
        try:
            check_codebook(cbs, cbz)
        except Exception as err:
            raise EncoderConfigError(str(err)) from None
        if cbs > 0 and not (-cbz <= k_ <= cbs - 1 - cbz):
            raise EncoderConfigError(f"level {k_} outside the codebook")
        self._check_open()
        if cbs == 1:
            return
        if cbs > 0:
            m_plus = cbs - 1 - cbz
            m_minus = cbz
            sign_mode = 1 if cbz == 0 else (2 if cbz == cbs - 1 else 0)
        cls = 0 if nb == 0 else (1 if nb < 0 else 2)
        _enc_level(&self.eng, self.ctx, k_, s, cls, bb, 1 if h else 0, n_, sign_mode,
                   m_plus, m_minus)

    def state(self):
        return {"L": self.eng.L, "R": self.eng.R, "BL": self.eng.BL, "NB": self.eng.NB,
                "buffered": self.eng.buffered, "bytes_written": self.eng.size}


    # -- payload-level API ------------------------------------------------------------------
    def encode_tensor(self, t, variant=2):
        """Code one tensor (§12 procedure B, mirrored)."""
        cdef EncJob job
        cdef int status
        cdef Shadow* sh = NULL
        cdef cnp.ndarray levels, tca_arr = None, hist_arr = None, skip_arr = None, epw
        self._check_open()
        p = prepare(t, variant)
        memset(&job, 0, sizeof(EncJob))
        job.rows = p.rows
        job.W = p.W
        job.N = p.N
        job.dq = p.dq
        job.eff_scan = p.eff_scan
        job.n_brows = p.n_brows
        job.variant = variant
        job.edition2_flags = 1 if p.edition2_flags else 0
        job.parent = p.parent
        job.hdsp_flag = p.hdsp_flag
        job.rowskip_flag = p.rowskip_flag
        job.qp_bits = p.qp_bits
        job.qp_offset = p.qp_offset
        job.no_bins = 1 if p.no_bins else 0
        job.param_opt = 1 if p.param_opt else 0
        job.tca_on = 1 if p.tca is not None else 0
        job.cbsize = p.cbsize
        job.cbzero = p.cbzero
        levels = p.levels
        job.levels = <const int32_t*>cnp.PyArray_DATA(levels)
        if p.tca is not None:
            tca_arr = p.tca
            job.tca = <const int32_t*>cnp.PyArray_DATA(tca_arr)
        if p.hist is not None:
            hist_arr = p.hist
            job.hist = <const uint8_t*>cnp.PyArray_DATA(hist_arr)
        if p.skip is not None:
            skip_arr = p.skip
            job.skip = <const uint8_t*>cnp.PyArray_DATA(skip_arr)
        epw = np.zeros(max(p.n_brows - 1, 0) * 3 + 1, dtype=np.int64)
        job.epw = <int64_t*>cnp.PyArray_DATA(epw)
        self._alloc(90 + 4 * job.N)
        # Pre-size the output: a few bits per element is typical; it grows if needed.
        if enc_reserve(&self.eng, (p.rows * p.W) // 2 + p.rows // 8 + 64) != 0:
            raise MemoryError("cannot allocate the payload buffer")
        if job.param_opt:
            sh = shadow_new(90 + 4 * job.N, job.N)
            if sh == NULL:
                raise MemoryError()
        try:
            with nogil:
                status = _encode_tensor_c(&self.eng, self.ctx, sh, &job)
        finally:
            shadow_free(sh)
        if status == ST_NOMEM:
            raise MemoryError("cannot grow the payload buffer")
        self.rounded += job.rounded
        self.entry_raw.append((job.P0, epw[:max(p.n_brows - 1, 0) * 3]) if _has_entry_points(t) else None)

    def finish(self):
        """Terminating bin 1 and flush (§3.7); returns the payload."""
        global _regular_bins_total
        self._check_open()
        enc_terminate(&self.eng, 1)
        enc_flush(&self.eng)
        _regular_bins_total += self.eng.bins
        if self.eng.oom:
            raise MemoryError("cannot grow the payload buffer")
        self.finished = True
        return (<char*>self.eng.buf)[:self.eng.size]


def entry_points_from(bytes payload, int64_t P0, cnp.ndarray raw):
    """The entry points (BitOffsetDelta, ep_arith_value, ep_dq_state) of one tensor (§3.8) from
    what the encoder recorded at each block-row start (bit position P, low register L, DQ state)
    and the finished payload: the decoder's value V >> 7 there is the codeword's 9 bits at P minus
    the low register's 9 least significant bits (which sit at P .. P + 8), modulo 512 (the
    difference is below R = 256, so no carry from further down matters)."""
    cdef const uint8_t* data = <const uint8_t*>payload
    cdef Py_ssize_t size = len(payload)
    cdef int64_t P, prev = P0, x, byte, window
    cdef int64_t[::1] r = raw
    out = []
    for x in range(r.shape[0] // 3):
        P = r[3 * x]
        window = 0
        for byte in range(P // 8, P // 8 + 3):      # 24 bits holding bits P .. P + 8
            window = (window << 8) | (data[byte] if byte < size else 0)
        window = (window >> (24 - 9 - P % 8)) & 511
        out.append((P - prev, (window - (r[3 * x + 1] & 511)) & 511, r[3 * x + 2]))
        prev = P
    return out


def encode_payload(tensors, variant=2, stats=None):
    """Code the tensors of one NDU payload back to back (§13); returns the payload and, per tensor,
    the entry points (BitOffsetDelta, ep_arith_value, ep_dq_state) (§13.5), derived while coding
    (no decode of the payload).  stats: a dict that receives "rounded", the number of DQ indices
    of the wrong parity that were rounded to a level (the decoder then returns other indices)."""
    tensors = list(tensors)
    enc = CabacEncoder()
    for t in tensors:
        enc.encode_tensor(t, variant)
    payload = enc.finish()
    if stats is not None:
        stats["rounded"] = enc.rounded
    return payload, [[] if raw is None else entry_points_from(payload, raw[0], raw[1])
                     for raw in enc.entry_raw]
