# cython: language_level=3
"""The decoder's level-loop engine: the §3 engine of ``_engine.pxd`` with a 64-bit value window.

``CabacEngine`` keeps V as 9 offset bits plus 7 look-ahead bits and fetches one byte whenever the
look-ahead runs out (a data-dependent branch every eight shifts).  ``WinEngine`` keeps the offset in
bits 63..55 of a 64-bit V and up to 55 look-ahead bits below it, refilled 7 bytes at a time; it is
converted from and back to a ``CabacEngine`` around the level loop, so everything outside the loop
(entry points, error offsets, over-read checks, the low-level API) sees the §3.1 registers.

Lazy MPS renormalisation: after an MPS, ``win_bin`` leaves R = rMPS (128..510) and V unshifted; the
one shift it may owe (R < 256) is applied at the start of the next bin, off the R -> rLPS -> R
dependency chain (the rLPS table is indexed by the unnormalised R).  ``win_norm`` applies a pending
shift; ``win_bypass_bits``, ``win_to`` and the caller's checks expect a normalised engine.  Bytes are
fetched exactly when the eager engine fetches them, so the over-read count is the same.

``DCtx`` is the level loop's copy of a context (§4.1): S, S0 and S1 all stored, and the shifts
sh0, sh1 as offsets into pre-shifted CURVE rows, so the update has no variable shift.
"""
from libc.stdint cimport uint8_t, int16_t, int32_t, uint32_t, int64_t, uint64_t

from nnr_core.cabac._engine cimport (CabacEngine, CabacCtx, NNR_CURVE, NNR_PARAM_SETS,
                                     nnr_renorm_shift)


cdef extern from *:
    """
    /* rLPS for a range R = 128..511 that may still owe its MPS renormalisation (R < 256 stands for
       2R): NNR_RLPS_R4[32 * p + (R >> 4)], i.e. q = (R >> 4) & 7 below 256, (R >> 5) & 7 above. */
    static const uint8_t NNR_RLPS_R4[32 * 32] = {
        0, 0, 0, 0, 0, 0, 0, 0, 128, 142, 156, 171, 185, 199, 213, 228, 128, 128, 142, 142, 156, 156, 171, 171, 185, 185, 199, 199, 213, 213, 228, 228,
        0, 0, 0, 0, 0, 0, 0, 0, 112, 125, 137, 150, 162, 175, 187, 200, 112, 112, 125, 125, 137, 137, 150, 150, 162, 162, 175, 175, 187, 187, 200, 200,
        0, 0, 0, 0, 0, 0, 0, 0, 97, 108, 119, 130, 141, 152, 163, 174, 97, 97, 108, 108, 119, 119, 130, 130, 141, 141, 152, 152, 163, 163, 174, 174,
        0, 0, 0, 0, 0, 0, 0, 0, 84, 93, 103, 112, 121, 131, 140, 150, 84, 84, 93, 93, 103, 103, 112, 112, 121, 121, 131, 131, 140, 140, 150, 150,
        0, 0, 0, 0, 0, 0, 0, 0, 74, 82, 90, 99, 107, 115, 123, 132, 74, 74, 82, 82, 90, 90, 99, 99, 107, 107, 115, 115, 123, 123, 132, 132,
        0, 0, 0, 0, 0, 0, 0, 0, 65, 72, 79, 87, 94, 101, 108, 116, 65, 65, 72, 72, 79, 79, 87, 87, 94, 94, 101, 101, 108, 108, 116, 116,
        0, 0, 0, 0, 0, 0, 0, 0, 57, 63, 70, 76, 82, 89, 95, 102, 57, 57, 63, 63, 70, 70, 76, 76, 82, 82, 89, 89, 95, 95, 102, 102,
        0, 0, 0, 0, 0, 0, 0, 0, 50, 56, 61, 67, 73, 78, 84, 90, 50, 50, 56, 56, 61, 61, 67, 67, 73, 73, 78, 78, 84, 84, 90, 90,
        0, 0, 0, 0, 0, 0, 0, 0, 45, 50, 55, 60, 65, 70, 75, 80, 45, 45, 50, 50, 55, 55, 60, 60, 65, 65, 70, 70, 75, 75, 80, 80,
        0, 0, 0, 0, 0, 0, 0, 0, 39, 43, 48, 52, 56, 61, 65, 70, 39, 39, 43, 43, 48, 48, 52, 52, 56, 56, 61, 61, 65, 65, 70, 70,
        0, 0, 0, 0, 0, 0, 0, 0, 34, 38, 42, 46, 50, 54, 58, 62, 34, 34, 38, 38, 42, 42, 46, 46, 50, 50, 54, 54, 58, 58, 62, 62,
        0, 0, 0, 0, 0, 0, 0, 0, 30, 33, 37, 40, 43, 47, 50, 54, 30, 30, 33, 33, 37, 37, 40, 40, 43, 43, 47, 47, 50, 50, 54, 54,
        0, 0, 0, 0, 0, 0, 0, 0, 27, 30, 33, 36, 39, 42, 45, 48, 27, 27, 30, 30, 33, 33, 36, 36, 39, 39, 42, 42, 45, 45, 48, 48,
        0, 0, 0, 0, 0, 0, 0, 0, 23, 26, 28, 31, 34, 36, 39, 42, 23, 23, 26, 26, 28, 28, 31, 31, 34, 34, 36, 36, 39, 39, 42, 42,
        0, 0, 0, 0, 0, 0, 0, 0, 20, 22, 24, 27, 29, 31, 33, 36, 20, 20, 22, 22, 24, 24, 27, 27, 29, 29, 31, 31, 33, 33, 36, 36,
        0, 0, 0, 0, 0, 0, 0, 0, 18, 20, 22, 24, 26, 28, 30, 32, 18, 18, 20, 20, 22, 22, 24, 24, 26, 26, 28, 28, 30, 30, 32, 32,
        0, 0, 0, 0, 0, 0, 0, 0, 15, 17, 19, 21, 22, 24, 26, 28, 15, 15, 17, 17, 19, 19, 21, 21, 22, 22, 24, 24, 26, 26, 28, 28,
        0, 0, 0, 0, 0, 0, 0, 0, 14, 16, 17, 19, 21, 22, 24, 26, 14, 14, 16, 16, 17, 17, 19, 19, 21, 21, 22, 22, 24, 24, 26, 26,
        0, 0, 0, 0, 0, 0, 0, 0, 12, 13, 15, 16, 17, 19, 20, 22, 12, 12, 13, 13, 15, 15, 16, 16, 17, 17, 19, 19, 20, 20, 22, 22,
        0, 0, 0, 0, 0, 0, 0, 0, 11, 12, 13, 15, 16, 17, 18, 20, 11, 11, 12, 12, 13, 13, 15, 15, 16, 16, 17, 17, 18, 18, 20, 20,
        0, 0, 0, 0, 0, 0, 0, 0, 10, 11, 12, 13, 14, 15, 16, 18, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15, 16, 16, 18, 18,
        0, 0, 0, 0, 0, 0, 0, 0, 9, 10, 11, 12, 13, 14, 15, 16, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15, 16, 16,
        0, 0, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 13, 14, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
        0, 0, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 13, 14, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
        0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 6, 7, 8, 8, 9, 10, 5, 5, 6, 6, 6, 6, 7, 7, 8, 8, 8, 8, 9, 9, 10, 10,
        0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 6, 7, 8, 8, 9, 10, 5, 5, 6, 6, 6, 6, 7, 7, 8, 8, 8, 8, 9, 9, 10, 10,
        0, 0, 0, 0, 0, 0, 0, 0, 4, 5, 5, 6, 6, 7, 7, 8, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8,
        0, 0, 0, 0, 0, 0, 0, 0, 4, 5, 5, 6, 6, 7, 7, 8, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8,
        0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 4, 4, 4, 5, 5, 6, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6,
        0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 4, 4, 4, 5, 5, 6, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6,
        0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3, 3, 4, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4,
        0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 3, 3, 3, 3, 4, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4,
    };
    /* NNR_CURVE[i] >> sh for sh = 0..7: NNR_CURVE_SH[32*sh + 16 + x] is the §4.4 step. */
    static const int16_t NNR_CURVE_SH[8 * 32] = {
        2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208, 144, 80, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0,
        1256, 1144, 1032, 920, 808, 696, 584, 472, 360, 280, 232, 184, 136, 104, 72, 40, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 0,
        628, 572, 516, 460, 404, 348, 292, 236, 180, 140, 116, 92, 68, 52, 36, 20, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 0,
        314, 286, 258, 230, 202, 174, 146, 118, 90, 70, 58, 46, 34, 26, 18, 10, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 0,
        157, 143, 129, 115, 101, 87, 73, 59, 45, 35, 29, 23, 17, 13, 9, 5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0,
        78, 71, 64, 57, 50, 43, 36, 29, 22, 17, 14, 11, 8, 6, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0,
        39, 35, 32, 28, 25, 21, 18, 14, 11, 8, 7, 5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
        19, 17, 16, 14, 12, 10, 9, 7, 5, 4, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    };
    static inline uint64_t nnr_load_be64(const uint8_t* p) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
        __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t x;
        memcpy(&x, p, 8);
        return __builtin_bswap64(x);
    #else
        return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
               ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
               ((uint64_t)p[6] << 8) | (uint64_t)p[7];
    #endif
    }
    #if defined(__GNUC__) || defined(__clang__)
    #define NNR_UNLIKELY(x) __builtin_expect(!!(x), 0)
    #else
    #define NNR_UNLIKELY(x) (x)
    #endif
    """
    const int16_t NNR_CURVE_SH[8 * 32]
    const uint8_t NNR_RLPS_R4[32 * 32]
    uint64_t nnr_load_be64(const uint8_t* p) noexcept nogil
    bint NNR_UNLIKELY(bint x) noexcept nogil


cdef enum:
    WIN_SHIFT = 55          # V's offset bits are 63..55


ctypedef struct WinEngine:
    uint64_t V              # offset << 55 | look-ahead bits (c of them valid, zeros below)
    uint32_t R
    int32_t c               # valid look-ahead bits; -7..-1 only inside a bin, before the refill
    const uint8_t* ptr
    const uint8_t* end
    const uint8_t* start
    int64_t overread


ctypedef struct DCtx:
    int16_t S               # S1 + 16*S0
    int16_t S0
    int16_t S1
    uint8_t c0              # 32*sh0 + 16: the S0 steps in NNR_CURVE_SH
    uint8_t c1              # 32*sh1 + 16


cdef inline void win_from(WinEngine* w, const CabacEngine* e) noexcept nogil:
    w.V = (<uint64_t>e.V) << 48
    w.R = e.R
    w.c = -e.B - 1
    w.ptr = e.ptr
    w.end = e.end
    w.start = e.start
    w.overread = e.overread


cdef inline int64_t win_bit_position(const WinEngine* w) noexcept nogil:
    """§3.8 P: bits shifted out of the offset since initialisation."""
    return 8 * (<int64_t>(w.ptr - w.start) + w.overread) - 9 - w.c


cdef inline void win_to(const WinEngine* w, CabacEngine* e) noexcept nogil:
    """The §3.1 registers at the same position: the bytes read ahead are given back."""
    cdef int64_t P = win_bit_position(w)
    cdef int64_t nread = P // 8 + 2
    cdef int64_t size = w.end - w.start
    cdef int lo = <int>(P % 8)          # look-ahead bits not yet fetched by a CabacEngine
    e.R = w.R
    e.V = (<uint32_t>(w.V >> 48)) & ~((<uint32_t>1 << lo) - 1)
    e.B = lo - 8
    e.start = w.start
    e.end = w.end
    e.ptr = w.start + (nread if nread < size else size)
    e.overread = nread - size if nread > size else 0


cdef inline uint32_t win_next_byte(WinEngine* w) noexcept nogil:
    # Past the end: zero bytes, counted (as cabac_next_byte).
    cdef uint32_t b
    if w.ptr < w.end:
        b = w.ptr[0]
        w.ptr += 1
        return b
    w.overread += 1
    return 0


cdef inline void win_fill(WinEngine* w, int need) noexcept nogil:
    """Make at least `need` (<= 48) look-ahead bits valid; c >= -7 on entry."""
    cdef uint64_t x
    cdef int m
    if w.end - w.ptr >= 8:
        x = nnr_load_be64(w.ptr)
        m = (WIN_SHIFT - w.c) >> 3      # whole bytes that fit below the valid bits (1..7)
        w.V |= (x >> (64 - 8 * m)) << (WIN_SHIFT - w.c - 8 * m)
        w.ptr += m
        w.c += 8 * m
    else:
        while w.c < need:
            w.V |= (<uint64_t>win_next_byte(w)) << (WIN_SHIFT - 8 - w.c)
            w.c += 8


cdef inline void dctx_from(DCtx* d, const CabacCtx* c) noexcept nogil:
    d.S = c.S
    d.S0 = c.S0
    d.S1 = <int16_t>(c.S - 16 * c.S0)
    d.c0 = <uint8_t>(32 * c.sh0 + 16)
    d.c1 = <uint8_t>(32 * c.sh1 + 16)


cdef inline void dctx_initial(DCtx* d, const CabacCtx* c) noexcept nogil:
    """The state a block-row reset (§6.3) gives context c: its own set's initial S0, S1."""
    d.S0 = NNR_PARAM_SETS[c.k][2]
    d.S1 = NNR_PARAM_SETS[c.k][3]
    d.S = <int16_t>(d.S1 + 16 * d.S0)
    d.c0 = <uint8_t>(32 * c.sh0 + 16)
    d.c1 = <uint8_t>(32 * c.sh1 + 16)


cdef inline void dctx_to(CabacCtx* c, const DCtx* d) noexcept nogil:
    c.S = d.S
    c.S0 = d.S0


cdef inline void dctx_update(DCtx* c, int bin) noexcept nogil:
    """§4.4 on stored S0, S1."""
    cdef int S0 = c.S0
    cdef int S1 = c.S1
    if bin:
        S0 += NNR_CURVE_SH[c.c0 + (S0 >> 3)]
        S1 += NNR_CURVE_SH[c.c1 + (S1 >> 7)]
    else:
        S0 -= NNR_CURVE_SH[c.c0 + ((-S0) >> 3)]
        S1 -= NNR_CURVE_SH[c.c1 + ((-S1) >> 7)]
    c.S0 = <int16_t>S0
    c.S1 = <int16_t>S1
    c.S = <int16_t>(S1 + 16 * S0)


cdef inline void win_norm(WinEngine* e) noexcept nogil:
    """Apply the renormalisation an MPS may have left pending."""
    cdef uint32_t n0 = (e.R >> 8) ^ 1
    e.R <<= n0
    e.V <<= n0
    e.c -= n0
    if NNR_UNLIKELY(e.c < 0):
        win_fill(e, 0)


cdef inline int win_bin(WinEngine* e, DCtx* c) noexcept nogil:
    """Regular bin (§3.2, §3.3) and context update (§4.4), renormalising lazily: an MPS leaves
    R = rMPS, the shift it may owe is applied at the start of the next bin (module docstring)."""
    cdef int S = c.S
    cdef int p = S >> 7
    cdef uint32_t rlps, rmps, R = e.R
    cdef uint32_t n0 = (R >> 8) ^ 1
    cdef int bin, n
    if p < 0:
        p = -p
    rlps = NNR_RLPS_R4[32 * p + (R >> 4)]
    e.V <<= n0
    e.c -= n0
    if NNR_UNLIKELY(e.c < 0):
        win_fill(e, 0)
    rmps = (R << n0) - rlps
    if (e.V >> WIN_SHIFT) < rmps:
        bin = S >= 0                    # MPS: R = rMPS, its renormalisation left to the next bin
        e.R = rmps
    else:
        bin = S < 0                     # LPS
        e.V -= (<uint64_t>rmps) << WIN_SHIFT
        n = nnr_renorm_shift(rlps)
        e.R = rlps << n
        e.V <<= n
        e.c -= n
        if NNR_UNLIKELY(e.c < 0):
            win_fill(e, 0)
    dctx_update(c, bin)
    return bin


cdef inline int win_bin_nb(WinEngine* e, DCtx* c) noexcept nogil:
    """win_bin without a branch on the bin, for bins near 50/50 whose value only feeds data (the
    sign flag): masks instead of a mispredicted jump; leaves the engine normalised.
    m = bin - 1 (0 or -1) and (x ^ m) - m = g*x in the update."""
    cdef int S = c.S
    cdef int p = S >> 7
    cdef uint32_t rlps, rmps, r, lps, mask, R = e.R
    cdef uint32_t n0 = (R >> 8) ^ 1
    cdef int bin, n, m, S0, S1, d0, d1
    if p < 0:
        p = -p
    rlps = NNR_RLPS_R4[32 * p + (R >> 4)]
    e.V <<= n0
    e.c -= n0
    if NNR_UNLIKELY(e.c < 0):
        win_fill(e, 0)
    rmps = (R << n0) - rlps
    lps = (e.V >> WIN_SHIFT) >= rmps
    mask = 0u - lps
    e.V -= ((<uint64_t>rmps) << WIN_SHIFT) & (0ull - <uint64_t>lps)
    r = rmps ^ ((rmps ^ rlps) & mask)
    n = nnr_renorm_shift(r)
    e.R = r << n
    e.V <<= n
    e.c -= n
    if NNR_UNLIKELY(e.c < 0):
        win_fill(e, 0)
    bin = <int>(lps ^ (S >= 0))
    m = bin - 1
    S0 = c.S0
    S1 = c.S1
    d0 = NNR_CURVE_SH[c.c0 + (((S0 ^ m) - m) >> 3)]
    d1 = NNR_CURVE_SH[c.c1 + (((S1 ^ m) - m) >> 7)]
    S0 += (d0 ^ m) - m
    S1 += (d1 ^ m) - m
    c.S0 = <int16_t>S0
    c.S1 = <int16_t>S1
    c.S = <int16_t>(S1 + 16 * S0)
    return bin


cdef inline uint32_t win_bypass_bits(WinEngine* e, int n) noexcept nogil:
    """n (0..31) bypass bins (§3.4), first bin most significant, on a normalised engine: n steps
    of the binary long division of the offset (followed by the next n bits) by R, done as one
    division."""
    cdef uint64_t x, q
    if n == 0:
        return 0
    if e.c < n:
        win_fill(e, n)
    x = e.V >> (WIN_SHIFT - n)
    q = x / e.R
    e.V = ((x - q * e.R) << WIN_SHIFT) | ((e.V << n) & ((<uint64_t>1 << WIN_SHIFT) - 1))
    e.c -= n
    return <uint32_t>q
