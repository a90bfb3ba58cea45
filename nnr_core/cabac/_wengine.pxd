# cython: language_level=3
"""The decoder's level-loop engine: the CABAC §3 engine of ``_engine.pxd`` on a 64-bit value window.

``CabacEngine`` keeps V as 9 offset bits plus 7 look-ahead bits and fetches one byte whenever the
look-ahead runs out (a data-dependent branch every eight shifts).  ``WinEngine`` keeps the offset in
bits 63..55 of a 64-bit V and up to 55 look-ahead bits below it, refilled 7 bytes at a time; it is
converted from and back to a ``CabacEngine`` around the level loop, so everything outside the loop
(entry points, error offsets, over-read checks, the low-level API) sees the CABAC §3.1 registers.

Lazy MPS renormalisation: after an MPS, ``win_bin`` leaves R = rMPS (128..510) and V unshifted; the
one shift it may owe (R < 256) is applied at the start of the next bin, off the R -> rLPS -> R
dependency chain (the rLPS table is indexed by the unnormalised R).  ``win_norm`` applies a pending
shift; ``win_bypass_bits``, ``win_to`` and the caller's checks expect a normalised engine.  Bytes are
fetched exactly when the eager engine fetches them, so the over-read count is the same.

``DCtx`` is the level loop's copy of a context (CABAC §4.1): S, S0 and S1 all stored, and the shifts
sh0, sh1 as offsets into pre-shifted CURVE rows, so the update has no variable shift.
"""
from libc.stdint cimport uint8_t, int16_t, int32_t, uint32_t, int64_t, uint64_t

from nnr_core.cabac._engine cimport (CabacEngine, CabacCtx, NNR_PARAM_SETS,
                                     nnr_renorm_shift)


cdef extern from "nnr_wengine.h":
    # derived from Appendix A.1 / A.2 by nnr_wengine_init (include/nnr_wengine.h)
    const int16_t NNR_CURVE_SH[8 * 32]
    const uint8_t NNR_RLPS_R4[32 * 32]
    void nnr_wengine_init() noexcept nogil

cdef extern from "nnr_bits.h":
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
    """CABAC §3.8 P: bits shifted out of the offset since initialisation."""
    return 8 * (<int64_t>(w.ptr - w.start) + w.overread) - 9 - w.c


cdef inline void win_to(const WinEngine* w, CabacEngine* e) noexcept nogil:
    """The CABAC §3.1 registers at the same position: the bytes read ahead are given back."""
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
    """The state a block-row reset (CABAC §6.3) gives context c: its own set's initial S0, S1."""
    d.S0 = NNR_PARAM_SETS[c.k][2]
    d.S1 = NNR_PARAM_SETS[c.k][3]
    d.S = <int16_t>(d.S1 + 16 * d.S0)
    d.c0 = <uint8_t>(32 * c.sh0 + 16)
    d.c1 = <uint8_t>(32 * c.sh1 + 16)


cdef inline void dctx_to(CabacCtx* c, const DCtx* d) noexcept nogil:
    c.S = d.S
    c.S0 = d.S0


cdef inline void dctx_update(DCtx* c, int bin) noexcept nogil:
    """CABAC §4.4 on stored S0, S1."""
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
    """Regular bin (CABAC §3.2-3.3) and context update (CABAC §4.4), renormalising lazily: an MPS
    leaves R = rMPS, the shift it may owe is applied when the next bin starts (module docstring)."""
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
    """n (0..31) bypass bins (CABAC §3.4), first bin most significant, on a normalised engine: n
    steps of the binary long division of the offset (followed by the next n bits) by R, done as one
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
