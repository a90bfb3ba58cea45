# cython: language_level=3
"""DeepCABAC arithmetic decoding engine and probability model (NNC-CABAC-QUANT.md §3, §4).

Everything here is ``cdef inline ... noexcept nogil`` so that every module cimporting this file gets
the bin functions inlined into its own hot loop.  The engine follows dav1d's habit: reading past the
end of the payload feeds zero bytes and counts the over-read, which is checked once by the caller,
so the per-bin path carries no bounds-check branch beyond the one byte fetch per refill.

Hot loops should copy the engine into a local ``CabacEngine`` (``cdef CabacEngine e = ep[0]``),
call these functions with ``&e`` and copy it back at the end: once everything is inlined the C
compiler keeps R, V, B and the read pointer in registers.
"""
from libc.stdint cimport uint8_t, int16_t, int32_t, uint32_t, int64_t, uint64_t, INT64_MAX


cdef extern from *:
    """
    /* NNC-CABAC-QUANT.md Appendix A.1: rLPS = NNR_RLPS_TABLE[(R >> 5) & 7][abs(S >> 7)]. */
    static const uint8_t NNR_RLPS_TABLE[8][32] = {
        {128, 112, 97, 84, 74, 65, 57, 50, 45, 39, 34, 30, 27, 23, 20, 18, 15, 14, 12, 11, 10, 9, 7, 7, 5, 5, 4, 4, 3, 3, 2, 2},
        {142, 125, 108, 93, 82, 72, 63, 56, 50, 43, 38, 33, 30, 26, 22, 20, 17, 16, 13, 12, 11, 10, 8, 8, 6, 6, 5, 5, 3, 3, 2, 2},
        {156, 137, 119, 103, 90, 79, 70, 61, 55, 48, 42, 37, 33, 28, 24, 22, 19, 17, 15, 13, 12, 11, 9, 9, 6, 6, 5, 5, 4, 4, 2, 2},
        {171, 150, 130, 112, 99, 87, 76, 67, 60, 52, 46, 40, 36, 31, 27, 24, 21, 19, 16, 15, 13, 12, 10, 10, 7, 7, 6, 6, 4, 4, 3, 3},
        {185, 162, 141, 121, 107, 94, 82, 73, 65, 56, 50, 43, 39, 34, 29, 26, 22, 21, 17, 16, 14, 13, 11, 11, 8, 8, 6, 6, 4, 4, 3, 3},
        {199, 175, 152, 131, 115, 101, 89, 78, 70, 61, 54, 47, 42, 36, 31, 28, 24, 22, 19, 17, 15, 14, 12, 12, 8, 8, 7, 7, 5, 5, 3, 3},
        {213, 187, 163, 140, 123, 108, 95, 84, 75, 65, 58, 50, 45, 39, 33, 30, 26, 24, 20, 18, 16, 15, 13, 13, 9, 9, 7, 7, 5, 5, 3, 3},
        {228, 200, 174, 150, 132, 116, 102, 90, 80, 70, 62, 54, 48, 42, 36, 32, 28, 26, 22, 20, 18, 16, 14, 14, 10, 10, 8, 8, 6, 6, 4, 4},
    };
    /* Appendix A.2: adaptation step, indexed 16 + ((g*S0) >> 3) or 16 + ((g*S1) >> 7). */
    static const int16_t NNR_CURVE[32] = {
        2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208,
        144, 80, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0
    };
    /* §4.2 parameter sets k = 0..8: sh0, sh1, initial S0, initial S1. */
    static const int16_t NNR_PARAM_SETS[9][4] = {
        {5, 4, 0, 0}, {5, 4, -41, -654}, {5, 4, 95, 1519},
        {4, 5, 0, 0}, {6, 6, 30, 482}, {6, 6, 95, 1519},
        {6, 6, -21, -337}, {7, 5, 0, 0}, {7, 5, 30, 482}
    };
    /* §8.1 DQ state transitions NEXT[s][parity]. */
    static const uint8_t NNR_DQ_NEXT[8][2] = {
        {0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6}
    };
    /* NEXT[.][0] applied m times (m = 0..3).  The parity-0 permutation has cycles of length
       1 (0), 1 (5), 4 (1 7 4 2) and 2 (3 6), so RowWidth transitions = (RowWidth mod 4) ones. */
    static const uint8_t NNR_DQ_ADV0[4][8] = {
        {0, 1, 2, 3, 4, 5, 6, 7},
        {0, 7, 1, 6, 2, 5, 3, 4},
        {0, 4, 7, 3, 1, 5, 6, 2},
        {0, 2, 4, 6, 7, 5, 3, 1}
    };
    /* Number of left shifts that bring an rLPS (2..255) to >= 256. */
    static inline int nnr_renorm_shift(unsigned int r) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_clz(r) - 23;
    #else
        int n = 0;
        while (r < 256) { r <<= 1; n++; }
        return n;
    #endif
    }
    """
    const uint8_t NNR_RLPS_TABLE[8][32]
    const int16_t NNR_CURVE[32]
    const int16_t NNR_PARAM_SETS[9][4]
    const uint8_t NNR_DQ_NEXT[8][2]
    const uint8_t NNR_DQ_ADV0[4][8]
    int nnr_renorm_shift(unsigned int r) noexcept nogil


# Engine state (§3.1).  V < R*128 between bins for every valid codeword; B is -8..-1 between bins.
ctypedef struct CabacEngine:
    uint32_t R              # range, 256..510 between bins
    uint32_t V              # value window: 9-bit offset + 7 bits look-ahead
    int32_t B               # refill counter; a byte is appended when it reaches >= 0
    const uint8_t* ptr      # next payload byte
    const uint8_t* end      # one past the last payload byte
    const uint8_t* start    # first payload byte
    int64_t overread        # zero bytes fed past `end` (any > 0 is an error, checked by the caller)


# One context model (§4.1): S = S1 + 16*S0 is stored combined (what rLPS needs), S1 derived.
ctypedef struct CabacCtx:
    int16_t S
    int16_t S0
    uint8_t sh0
    uint8_t sh1
    uint8_t k               # parameter set, for block-row resets (§6.3)
    uint8_t pad


cdef inline uint32_t cabac_next_byte(CabacEngine* e) noexcept nogil:
    # The only bounds test of the engine: once per byte, never per bin.
    cdef uint32_t b
    if e.ptr < e.end:
        b = e.ptr[0]
        e.ptr += 1
        return b
    e.overread += 1
    return 0


cdef inline void cabac_init(CabacEngine* e, const uint8_t* data, Py_ssize_t size) noexcept nogil:
    """§3.1: R = 510, V = first two bytes, B = -8."""
    e.start = data
    e.ptr = data
    e.end = data + size
    e.overread = 0
    e.R = 510
    e.V = cabac_next_byte(e) << 8
    e.V |= cabac_next_byte(e)
    e.B = -8


cdef inline int64_t cabac_bytes_read(const CabacEngine* e) noexcept nogil:
    # Bytes taken from the input, including the zero bytes fed past the end.
    return <int64_t>(e.ptr - e.start) + e.overread


cdef inline int64_t cabac_bit_position(const CabacEngine* e) noexcept nogil:
    """§3.8 P: single-bit left shifts of V since initialisation."""
    return 8 * cabac_bytes_read(e) - 16 + (e.B + 8)


cdef inline void ctx_set(CabacCtx* c, int k) noexcept nogil:
    """(Re)initialise a context with parameter set k (§4.2): shifts and state."""
    c.sh0 = <uint8_t>NNR_PARAM_SETS[k][0]
    c.sh1 = <uint8_t>NNR_PARAM_SETS[k][1]
    c.S0 = NNR_PARAM_SETS[k][2]
    c.S = <int16_t>(NNR_PARAM_SETS[k][3] + 16 * NNR_PARAM_SETS[k][2])
    c.k = <uint8_t>k
    c.pad = 0


cdef inline void ctx_reset(CabacCtx* c) noexcept nogil:
    """Block-row reset (§6.3): state back to the context's own set, shifts unchanged."""
    c.S0 = NNR_PARAM_SETS[c.k][2]
    c.S = <int16_t>(NNR_PARAM_SETS[c.k][3] + 16 * NNR_PARAM_SETS[c.k][2])


cdef inline void ctx_init_all(CabacCtx* ctx, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        ctx_set(&ctx[i], 0)


cdef inline void ctx_reset_all(CabacCtx* ctx, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        ctx_reset(&ctx[i])


cdef inline void ctx_update(CabacCtx* c, int bin) noexcept nogil:
    """§4.4: both estimators move towards the bin; S1 is derived from the OLD S0."""
    cdef int S0 = c.S0
    cdef int S1 = c.S - 16 * S0
    if bin:
        S0 += NNR_CURVE[16 + (S0 >> 3)] >> c.sh0
        S1 += NNR_CURVE[16 + (S1 >> 7)] >> c.sh1
    else:
        S0 -= NNR_CURVE[16 + ((-S0) >> 3)] >> c.sh0
        S1 -= NNR_CURVE[16 + ((-S1) >> 7)] >> c.sh1
    c.S0 = <int16_t>S0
    c.S = <int16_t>(S1 + 16 * S0)


cdef inline int cabac_decode_bin(CabacEngine* e, CabacCtx* c) noexcept nogil:
    """Regular bin (§3.2, §3.3) followed by the context update (§4.4)."""
    cdef int S = c.S
    cdef int p = S >> 7                 # arithmetic shift: S = -1 gives p = 1
    cdef uint32_t rlps, rmps, scaled
    cdef int bin, n
    if p < 0:
        p = -p
    rlps = NNR_RLPS_TABLE[(e.R >> 5) & 7][p]
    rmps = e.R - rlps
    scaled = rmps << 7
    if e.V < scaled:
        bin = S >= 0                    # MPS
        e.R = rmps
        if rmps < 256:                  # rMPS >= 128: at most one shift
            e.R = rmps << 1
            e.V <<= 1
            e.B += 1
            if e.B >= 0:
                e.V += cabac_next_byte(e)
                e.B -= 8
    else:
        bin = S < 0                     # LPS
        e.V -= scaled
        n = nnr_renorm_shift(rlps)
        e.R = rlps << n
        e.V <<= n
        e.B += n
        if e.B >= 0:
            e.V += cabac_next_byte(e) << e.B
            e.B -= 8
    ctx_update(c, bin)
    return bin


cdef inline int cabac_decode_bypass(CabacEngine* e) noexcept nogil:
    """One bypass bin (§3.4)."""
    cdef uint32_t scaled
    e.V <<= 1
    e.B += 1
    if e.B >= 0:
        e.V += cabac_next_byte(e)
        e.B = -8
    scaled = e.R << 7
    if e.V >= scaled:
        e.V -= scaled
        return 1
    return 0


cdef inline uint64_t cabac_decode_bypass_bits(CabacEngine* e, int n) noexcept nogil:
    """n bypass bins (0..64) as an unsigned value, first bin most significant."""
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 1) | <uint64_t>cabac_decode_bypass(e)
    return v


cdef inline int cabac_decode_terminate(CabacEngine* e) noexcept nogil:
    """Terminating bin (§3.5)."""
    e.R -= 2
    if e.V >= (e.R << 7):
        return 1
    if e.R < 256:
        e.R <<= 1
        e.V <<= 1
        e.B += 1
        if e.B >= 0:
            e.V += cabac_next_byte(e)
            e.B = -8
    return 0


cdef inline void cabac_reset_range(CabacEngine* e) noexcept nogil:
    """Range reset at block-row starts (§3.6); V and B untouched."""
    e.R = 256


# ---------------------------------------------------------------------------------------------
# Context index layout, NNCodec-2 (§6.1).  N-dependent offsets are computed per tensor.
cdef enum:
    CTX_SIG = 0             # 3*s + c
    CTX_SIG_TCA = 24        # 24 + 2*s + (abs(b) > 1)
    CTX_SIG_HDSP = 40       # 40 + s
    CTX_SIGN = 48           # 48 + c
    CTX_SIGN_TCA_NEG = 51
    CTX_SIGN_TCA_POS = 52
    CTX_GTX = 53            # 53 + 2j + (k < 0); TCA: 53 + 2N + 2j + (abs(b) >= j ? 0 : 1)
    # remainder prefix bin i: 53 + 4N + i; param_set_flag: 87 + 4N; row_skip_list: 89 + 4N;
    # total 90 + 4N contexts.
    SIGNAL_MAX = 84 + 4 * 256   # longest signalling list (§6.4): variant 2 with TCA, HDSP, N = 256


# Context selection of the level bins (§6.2), one definition for the decoder, the encoder and the
# encoder's parameter-set pass.  s: DQ state, cls: neighbour class, b: TCA reference level
# (0 without TCA), h: HDSP history flag.

cdef inline int ctx_sig(int s, int cls, int64_t b, int h) noexcept nogil:
    """sig_flag: HDSP first, then TCA, then the neighbour class."""
    if h:
        return CTX_SIG_HDSP + s
    if b != 0:
        return CTX_SIG_TCA + 2 * s + (1 if (b > 1 or b < -1) else 0)
    return CTX_SIG + 3 * s + cls


cdef inline int ctx_sign(int cls, int64_t b) noexcept nogil:
    """sign_flag."""
    if b != 0:
        return CTX_SIGN_TCA_NEG if b < 0 else CTX_SIGN_TCA_POS
    return CTX_SIGN + cls


cdef inline int ctx_gtx(int N, int j, int sign, int64_t b) noexcept nogil:
    """abs_level_greater_x[j]."""
    if b != 0:
        return CTX_GTX + 2 * N + 2 * j + (0 if (b if b >= 0 else -b) >= j else 1)
    return CTX_GTX + 2 * j + sign


cdef inline int codebook_bounds(int64_t cbsize, int64_t cbzero, int64_t* m_plus,
                                int64_t* m_minus) noexcept nogil:
    """§5.2: the largest |k| of each sign (unbounded without a codebook) into m_plus / m_minus;
    returns the sign mode: 0 sign coded, 1 / 2 inferred positive / negative."""
    if cbsize <= 0:
        m_plus[0] = INT64_MAX
        m_minus[0] = INT64_MAX
        return 0
    m_plus[0] = cbsize - 1 - cbzero
    m_minus[0] = cbzero
    return 1 if cbzero == 0 else (2 if cbzero == cbsize - 1 else 0)


cdef inline void scan_block(int64_t rows, int64_t W, int eff_scan, int64_t* bh,
                            int64_t* bw) noexcept nogil:
    """§7.2 block height and width: the whole matrix for the matrix scan, else 2^(eff_scan + 2)."""
    if eff_scan == 0:
        bh[0] = rows
        bw[0] = W
    else:
        bh[0] = 4 << eff_scan
        bw[0] = bh[0]


cdef inline int _signal_add(int32_t* idx, uint8_t* coded, int n, int ctx, bint c) noexcept nogil:
    idx[n] = ctx
    coded[n] = c
    return n + 1


cdef inline int signalled_contexts(int32_t* idx, uint8_t* coded, int N, int dq, int tca, int hdsp,
                                   int64_t cbsize, int64_t cbzero, int variant) noexcept nogil:
    """The context parameter-set signalling list of §6.4, in order: fills idx[] (context index) and
    coded[] (whether its param_set_flag is in the payload); returns the length (<= SIGNAL_MAX).
    The one definition the decoder and the encoder both walk."""
    cdef int rem0 = CTX_GTX + 4 * N
    cdef int a, n = 0
    cdef int nsig = 24 if dq else 3
    cdef bint cb1, sgn, bounded
    cdef int64_t M = 0
    if variant == 1:
        # NNCodec-1: sig, sign, greater-than and all 32 remainder contexts, every one coded.
        for a in range(nsig):
            n = _signal_add(idx, coded, n, CTX_SIG + a, True)
        for a in range(3):
            n = _signal_add(idx, coded, n, CTX_SIGN + a, True)
        for a in range(2 * N):
            n = _signal_add(idx, coded, n, CTX_GTX + a, True)
        for a in range(32):
            n = _signal_add(idx, coded, n, rem0 + a, True)
        return n
    cb1 = cbsize != 1
    sgn = cb1 and not (cbsize > 0 and (cbzero == 0 or cbzero == cbsize - 1))
    bounded = cbsize > 0
    if bounded:
        M = cbzero if cbzero > cbsize - 1 - cbzero else cbsize - 1 - cbzero
    for a in range(nsig):                                   # group 1
        n = _signal_add(idx, coded, n, CTX_SIG + a, cb1)
    if tca:                                                 # group 2
        for a in range(16 if dq else 2):
            n = _signal_add(idx, coded, n, CTX_SIG_TCA + a, cb1)
    if hdsp:                                                # group 3
        for a in range(8 if dq else 1):
            n = _signal_add(idx, coded, n, CTX_SIG_HDSP + a, cb1)
    for a in range(5 if tca else 3):                        # group 4
        n = _signal_add(idx, coded, n, CTX_SIGN + a, sgn)
    for a in range(2 * N):                                  # group 5
        n = _signal_add(idx, coded, n, CTX_GTX + a, (not bounded) or a < 2 * M)
    if tca:                                                 # group 6
        for a in range(2 * N, 4 * N):
            n = _signal_add(idx, coded, n, CTX_GTX + a, (not bounded) or a < 2 * (M - 1) + 2 * N)
    for a in range(31):                                     # group 7
        n = _signal_add(idx, coded, n, rem0 + a, (not bounded) or N + ((<int64_t>1) << (a + 1)) - 2 < M)
    return n
