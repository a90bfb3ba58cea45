# cython: language_level=3
"""DeepCABAC arithmetic decoding engine and probability model (CABAC §3, CABAC §4).

Everything here is ``cdef inline ... noexcept nogil`` so that every module cimporting this file gets
the bin functions inlined into its own hot loop.  The engine follows dav1d's habit: reading past the
end of the payload feeds zero bytes and counts the over-read, which is checked once by the caller,
so the per-bin path carries no bounds-check branch beyond the one byte fetch per refill.

Hot loops should copy the engine into a local ``CabacEngine`` (``cdef CabacEngine e = ep[0]``),
call these functions with ``&e`` and copy it back at the end: once everything is inlined the C
compiler keeps R, V, B and the read pointer in registers.
"""
from libc.stdint cimport uint8_t, int16_t, int32_t, uint32_t, int64_t, uint64_t, INT64_MAX


cdef extern from "nnr_cabac_tables.h":
    # Appendix A.1 / A.2, CABAC §4.2, CABAC §8.1 (the C header holds the values)
    const uint8_t NNR_RLPS_TABLE[8][32]
    const int16_t NNR_CURVE[32]
    enum:
        NNR_NUM_PARAM_SETS
    const int16_t NNR_PARAM_SETS[9][4]
    const uint8_t NNR_DQ_NEXT[8][2]
    const uint8_t NNR_DQ_ADV0[4][8]
    unsigned nnr_rlps_r4(int p, int x) noexcept nogil
    int nnr_renorm_shift(unsigned int r) noexcept nogil


# Engine state (CABAC §3.1).  V < R*128 between bins for every valid codeword; B is -8..-1
# between bins.
ctypedef struct CabacEngine:
    uint32_t R              # range, 256..510 between bins
    uint32_t V              # value window: 9-bit offset + 7 bits look-ahead
    int32_t B               # refill counter; a byte is appended when it reaches >= 0
    const uint8_t* ptr      # next payload byte
    const uint8_t* end      # one past the last payload byte
    const uint8_t* start    # first payload byte
    int64_t overread        # zero bytes fed past `end` (any > 0 is an error, checked by the caller)


# One context model (CABAC §4.1): S = S1 + 16*S0 is stored combined (what rLPS needs), S1 derived.
ctypedef struct CabacCtx:
    int16_t S
    int16_t S0
    uint8_t sh0
    uint8_t sh1
    uint8_t k               # parameter set, for block-row resets (CABAC §6.3)
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
    """CABAC §3.1: R = 510, V = first two bytes, B = -8."""
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
    """CABAC §3.8 P: single-bit left shifts of V since initialisation."""
    return 8 * cabac_bytes_read(e) - 16 + (e.B + 8)


cdef inline void ctx_set(CabacCtx* c, int k) noexcept nogil:
    """(Re)initialise a context with parameter set k (CABAC §4.2): shifts and state."""
    c.sh0 = <uint8_t>NNR_PARAM_SETS[k][0]
    c.sh1 = <uint8_t>NNR_PARAM_SETS[k][1]
    c.S0 = NNR_PARAM_SETS[k][2]
    c.S = <int16_t>(NNR_PARAM_SETS[k][3] + 16 * NNR_PARAM_SETS[k][2])
    c.k = <uint8_t>k
    c.pad = 0


cdef inline void ctx_reset(CabacCtx* c) noexcept nogil:
    """Block-row reset (CABAC §6.3): state back to the context's own set, shifts unchanged."""
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
    """CABAC §4.4: both estimators move towards the bin; S1 is derived from the OLD S0."""
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
    """Regular bin (CABAC §3.2, CABAC §3.3) followed by the context update (CABAC §4.4)."""
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
    """One bypass bin (CABAC §3.4)."""
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
    """Terminating bin (CABAC §3.5)."""
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
    """Range reset at block-row starts (CABAC §3.6); V and B untouched."""
    e.R = 256


# ---------------------------------------------------------------------------------------------
# Context index layout, NNCodec-2 (CABAC §6.1).  N-dependent offsets are computed per tensor.
cdef enum:
    CTX_SIG = 0             # 3*s + c
    CTX_SIG_TCA = 24        # 24 + 2*s + (abs(b) > 1)
    CTX_SIG_HDSP = 40       # 40 + s
    CTX_SIGN = 48           # 48 + c
    CTX_SIGN_TCA_NEG = 51
    CTX_SIGN_TCA_POS = 52
    CTX_GTX = 53            # 53 + 2j + (k < 0); TCA: ctx_gtx_tca(N) + 2j + (abs(b) >= j ? 0 : 1)
    CTX_REM_COUNT = 32      # remainder prefix bins from ctx_rem(N) (only i <= 30 is used)
    SIGNAL_MAX = 84 + 4 * 256   # longest CABAC §6.4 signalling list: variant 2, TCA, HDSP, N = 256


# The N-dependent part of the layout (N = cabac_unary_length_minus1 + 1): after the 2N regular and
# 2N TCA greater-than contexts, the remainder prefix contexts, 2 unused, param_set_flag, 1 unused,
# row_skip_list.  The twin (pytwin_levels) has the same helpers under the same names.

cdef inline int ctx_gtx_tca(int N) noexcept nogil:
    """First TCA greater-than context, 53 + 2N."""
    return CTX_GTX + 2 * N


cdef inline int ctx_rem(int N) noexcept nogil:
    """First remainder-prefix context, 53 + 4N."""
    return CTX_GTX + 4 * N


cdef inline int ctx_param_set_flag(int N) noexcept nogil:
    """Context of param_set_flag, 87 + 4N."""
    return ctx_rem(N) + CTX_REM_COUNT + 2


cdef inline int ctx_row_skip(int N) noexcept nogil:
    """Context of row_skip_list, 89 + 4N."""
    return ctx_rem(N) + CTX_REM_COUNT + 4


cdef inline int num_contexts(int N) noexcept nogil:
    """Size of the context memory, 90 + 4N."""
    return ctx_rem(N) + CTX_REM_COUNT + 5


# Context selection of the level bins (CABAC §6.2), one definition for the decoder, the encoder and
# the encoder's parameter-set pass.  s: DQ state, cls: neighbour class, b: TCA reference level
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
        return ctx_gtx_tca(N) + 2 * j + (0 if (b if b >= 0 else -b) >= j else 1)
    return CTX_GTX + 2 * j + sign


cdef inline int neighbour_class(int64_t v) noexcept nogil:
    """Neighbour class c of CABAC §6.1 for the previous level v: 0 zero, 1 negative, 2 positive."""
    return 0 if v == 0 else (1 if v < 0 else 2)


cdef inline int64_t dq_level(int64_t i, int s) noexcept nogil:
    """CABAC §8.2 for the encoder: the level k of reconstruction index i in DQ state s.  REF-QUIRK:
    an index of the wrong parity for Q(s & 1) is rounded by the same formula, as NNCodec does."""
    if i > 0:
        return (i + (s & 1)) >> 1
    if i < 0:
        return (i - (s & 1)) >> 1
    return 0


cdef inline int codebook_bounds(int64_t cbsize, int64_t cbzero, int64_t* m_plus,
                                int64_t* m_minus) noexcept nogil:
    """CABAC §5.2: the largest |k| of each sign (unbounded without a codebook) into
    m_plus / m_minus; returns the sign mode: 0 sign coded, 1 / 2 inferred positive / negative."""
    if cbsize <= 0:
        m_plus[0] = INT64_MAX
        m_minus[0] = INT64_MAX
        return 0
    m_plus[0] = cbsize - 1 - cbzero
    m_minus[0] = cbzero
    return 1 if cbzero == 0 else (2 if cbzero == cbsize - 1 else 0)


cdef inline int64_t block_dim(int eff_scan) noexcept nogil:
    """CABAC §7.2 BlockDim of a block scan (eff_scan 1..4): 2^(eff_scan + 2)."""
    return 4 << eff_scan


cdef inline void scan_block(int64_t rows, int64_t W, int eff_scan, int64_t* bh,
                            int64_t* bw) noexcept nogil:
    """CABAC §7.2 block height and width: the whole matrix for the matrix scan, else BlockDim."""
    if eff_scan == 0:
        bh[0] = rows
        bw[0] = W
    else:
        bh[0] = block_dim(eff_scan)
        bw[0] = bh[0]


cdef inline int64_t scan_end(int64_t start, int64_t size, int64_t limit) noexcept nogil:
    """One past the last row (column) of the block row (block) from `start`: clipped to the
    matrix's `limit` rows (columns), CABAC §7.2."""
    cdef int64_t end = start + size
    if end > limit:
        end = limit
    return end


cdef inline int64_t num_block_rows(int64_t rows, int eff_scan) noexcept nogil:
    """CABAC §7.2 block rows: ceil(Rows / BlockDim); 1 for the matrix scan."""
    cdef int64_t bd
    if eff_scan == 0:
        return 1
    bd = block_dim(eff_scan)
    return (rows + bd - 1) // bd


cdef inline int _signal_add(int32_t* idx, uint8_t* coded, int n, int ctx, bint c) noexcept nogil:
    idx[n] = ctx
    coded[n] = c
    return n + 1


cdef inline int signalled_contexts(int32_t* idx, uint8_t* coded, int N, int dq, int tca, int hdsp,
                                   int64_t cbsize, int64_t cbzero, int variant) noexcept nogil:
    """The context parameter-set signalling list of CABAC §6.4, in order: fills idx[] (context
    index) and coded[] (whether its param_set_flag is in the payload); returns the length
    (<= SIGNAL_MAX). The one definition the decoder and the encoder both walk."""
    cdef int rem0 = ctx_rem(N)
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
        for a in range(CTX_REM_COUNT):
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
    for a in range(CTX_REM_COUNT - 1):                      # group 7
        n = _signal_add(idx, coded, n, rem0 + a, (not bounded) or N + ((<int64_t>1) << (a + 1)) - 2 < M)
    return n
