# cython: language_level=3
"""DeepCABAC payload encoder, bit-exact with NNCodec 2.1.3 (variant 2) and NNCodec 1.x
(variant 1): the encoding engine of NNC-CABAC-QUANT.md §3.7 and the mirror of procedure B of §12
(§13), with the binarizations of §5, the contexts of §6 (NNCodec-2 layout), NNCodec's choice of
the context parameter sets (§6.5, bit estimates of §4.6), the scans and row skipping of §7 and the
DQ mapping i -> k of §8.2.  API contract: ``nnr_core/cabac/README.md``; pure-Python twin:
``pytwin_enc.py`` (which also holds the argument checks both use).

Arguments are checked with the GIL; the per-tensor procedure, including the pseudo pass of the
parameter-set optimisation (the pass puts each context's bins into a bucket of its own, which
``_shadow.pxd`` runs through all nine estimators of the context), runs ``with nogil`` on C
pointers and reports a status code that is turned into an exception afterwards.  Output bytes go into a growable C buffer.  The levels
themselves (B.7) are coded by a level loop on an engine of its own (``LoopEngine``: a 64-bit low
register whose bytes are written several at a time, branchless bins from tables), handed the
§3.7 registers and back around it.
"""
from libc.stdint cimport uint8_t, int8_t, uint16_t, int16_t, int32_t, uint32_t, int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset

import operator

import numpy as np
cimport numpy as cnp

from nnr_core.errors import EncoderConfigError
from nnr_core.cabac.bitcost import BIT_COST
from nnr_core.cabac.pytwin_enc import prepare, _has_entry_points
from nnr_core.cabac.pytwin_levels import check_codebook

from nnr_core.cabac._engine cimport (
    CabacCtx, NNR_RLPS_TABLE, NNR_CURVE, NNR_PARAM_SETS, NNR_DQ_NEXT, NNR_DQ_ADV0,
    nnr_renorm_shift, ctx_set, ctx_reset_all, ctx_init_all, ctx_update,
    CTX_SIG, CTX_SIG_TCA, CTX_SIG_HDSP, CTX_SIGN, CTX_SIGN_TCA_NEG, CTX_SIGN_TCA_POS, CTX_GTX,
    SIGNAL_MAX, signalled_contexts, ctx_sig, ctx_sign, ctx_gtx, codebook_bounds, scan_block)
from nnr_core.cabac._wengine cimport NNR_RLPS_R4, NNR_CURVE_SH
from nnr_core.cabac._shadow cimport (
    NnrShadowCtx, Shadow, SHADOW_CHUNK, nnr_msb64, nnr_shadow_init, nnr_shadow_reset, nnr_shadow_run, shadow_emit, shadow_flush)

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
# The level loop's engine: §3.7 with a 64-bit low register and deferred byte output.
#
# ``LoopEngine`` keeps the bits of L that are not written yet in 64 bits: the 9 bits aligned with
# R, `pend` bits above them, a possible carry bit and, above that, a marker bit (so pend is never
# counted: it is the marker's position minus 10).  Whole bytes are written only when the marker
# reaches bit LOOP_FLUSH, several at a time; a carry is propagated into the bytes already in the
# buffer (the codeword is the same integer whatever the moment its bytes are written).  Like the
# decoder's WinEngine it renormalises lazily: after an MPS, R = rMPS (128..510) and L unshifted,
# the one shift owed (R < 256) is applied at the start of the next bin, off the R -> rLPS -> R
# chain.  ``loop_from`` / ``loop_to`` convert from and back to the §3.7 registers (``EncEngine``)
# around the level loop.

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define NNR_ENC_UNLIKELY(x) __builtin_expect(!!(x), 0)
    #else
    #define NNR_ENC_UNLIKELY(x) (x)
    #endif
    static inline void nnr_store_be64(uint8_t* p, uint64_t x) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
        __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        x = __builtin_bswap64(x);
        memcpy(p, &x, 8);
    #else
        int i;
        for (i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (56 - 8 * i));
    #endif
    }
    /* p, hidden from the optimiser: keeps a table row's address computed apart from the index
       that is added to it (otherwise everything is summed after the index, on the R chain). */
    static inline const void* nnr_opaque(const void* p) {
    #if defined(__GNUC__) || defined(__clang__)
        __asm__("" : "+r"(p));
    #endif
        return p;
    }
    static inline uint64_t nnr_opaque_u64(uint64_t x) {
    #if defined(__GNUC__) || defined(__clang__)
        __asm__("" : "+r"(x));
    #endif
        return x;
    }
    """
    bint NNR_ENC_UNLIKELY(bint x) noexcept nogil
    const void* nnr_opaque(const void* p) noexcept nogil
    uint64_t nnr_opaque_u64(uint64_t x) noexcept nogil
    void nnr_store_be64(uint8_t* p, uint64_t x) noexcept nogil


cdef enum:
    LOOP_FLUSH = 50         # marker bit (10 + pend) at which bytes are written: pend >= 40
    LOOP_BYPASS_MAX = 53    # pend + bypass bins: the marker stays within 64 bits


ctypedef struct LoopEngine:         # the registers: a local copy of it stays in registers
    uint64_t L              # marker << (10 + pend) | carry << (9 + pend) | 9 + pend bits
    uint64_t R              # 128..510; below 256 after an MPS whose shift is still owed


ctypedef struct LoopOut:            # the bytes: touched only when bytes are written
    uint8_t* buf            # all bytes written so far (pending ones included), grown as needed
    int64_t size
    int64_t cap
    int oom


# §3.7 for coding `bin` in a context of state S, with a range R that may still owe its MPS shift
# (rLPS = NNR_RLPS_R4 of _wengine.pxd): LT.step[bin][(S >> 7) + 32][R >> 4] = (radd, n, rl) is
# (-rLPS, 0, 0) if bin is the MPS and (rLPS << n, n, rLPS) if it is the LPS, n its renormalisation.
# With u = the normalised R for an LPS and 0 for an MPS, the new R is R - u + radd and the new L
# (L + u - rl) << n.  A row is 128 bytes, so its offset is S & ~127.
ctypedef struct LoopStep:
    int16_t radd
    uint8_t n
    uint8_t rl


# §4.4 as tables.  The fast estimator: LT.s0[bin][256 * (sh0 - 4) + 128 + S0] holds the new
# table index (low 16 bits) and 16 * (new S0 - S0) (high 16 bits); sh0 is 4..7 in every parameter
# set and |S0| <= 123 (§4.5).  The slow estimator kept as S1 + 128 * c1 (c1 = 32 * sh1 + 16, the
# row of NNR_CURVE_SH): its step is LT.s1[(S1 + 128 * c1) >> 7] for bin 1 and
# LT.s1[256 + ((S1 + 128 * c1 + 127) >> 7)] for bin 0 ((-S1) >> 7 = -((S1 + 127) >> 7)).
# All in one struct, so that the level loop reaches them from one base register.
ctypedef struct LoopTables:
    LoopStep step[2][64][32]
    int32_t s0[2][1024]
    int16_t s1[512]

cdef LoopTables LT


cdef int _loop_tables() noexcept nogil:
    cdef int row, x, p, r, n, sh, bin, S0, g, v
    for row in range(64):
        p = row - 32 if row >= 32 else 32 - row
        if p > 31:
            p = 31
        for x in range(32):
            r = NNR_RLPS_R4[32 * p + x]
            n = nnr_renorm_shift(r) if r else 0
            for bin in range(2):
                if bin == (1 if row >= 32 else 0):          # MPS
                    LT.step[bin][row][x].radd = <int16_t>-r
                    LT.step[bin][row][x].n = 0
                    LT.step[bin][row][x].rl = 0
                else:
                    LT.step[bin][row][x].radd = <int16_t>(r << n)
                    LT.step[bin][row][x].n = <uint8_t>n
                    LT.step[bin][row][x].rl = <uint8_t>r
    for x in range(9):
        if not 4 <= NNR_PARAM_SETS[x][0] <= 7:
            return -1
    memset(LT.s0, 0, sizeof(LT.s0))
    for sh in range(4, 8):
        for bin in range(2):
            g = 1 if bin else -1
            for S0 in range(-128, 128):
                v = S0 + g * (NNR_CURVE[16 + ((g * S0) >> 3)] >> sh)
                if not -128 <= v <= 127:
                    v = S0                                  # outside the reachable states
                x = 256 * (sh - 4) + 128
                LT.s0[bin][x + S0] = (x + v) | ((16 * (v - S0)) << 16)
    for x in range(256):
        LT.s1[x] = NNR_CURVE_SH[x]
        v = 2 * (32 * ((x - 1) >> 5) + 16) - x
        LT.s1[256 + x] = NNR_CURVE_SH[v] if 0 <= v < 256 else 0
    return 0

if _loop_tables() != 0:
    raise ImportError("nnr_core.cabac._encoder assumes sh0 = 4..7 in every parameter set")


# One context in the level loop (§4.1): S = S1 + 16*S0, and both estimators as their table
# indices above.
ctypedef struct LCtx:
    int16_t S
    int16_t S1c             # S1 + 128 * (32 * sh1 + 16)
    uint16_t S0t            # 256 * (sh0 - 4) + 128 + S0
    uint16_t pad


cdef inline void lctx_set(LCtx* d, int S0, int S1, const CabacCtx* c) noexcept nogil:
    d.S = <int16_t>(S1 + 16 * S0)
    d.S1c = <int16_t>(S1 + 128 * (32 * c.sh1 + 16))
    d.S0t = <uint16_t>(256 * (c.sh0 - 4) + 128 + S0)
    d.pad = 0


cdef inline void lctx_get(CabacCtx* d, const LCtx* c) noexcept nogil:
    d.S = c.S
    d.S0 = <int16_t>(c.S0t - 256 * (d.sh0 - 4) - 128)


cdef inline void lctx_update(LCtx* c, int bin) noexcept nogil:
    """§4.4 from the tables, without a branch on the bin (m = bin - 1, (x ^ m) - m = g*x)."""
    cdef int m = bin - 1
    cdef int32_t e0 = LT.s0[bin][c.S0t]
    cdef int64_t S1c = c.S1c
    cdef int d1 = LT.s1[((S1c + (127 & m)) >> 7) + (256 & m)]
    d1 = (d1 ^ m) - m
    c.S0t = <uint16_t>e0
    c.S1c = <int16_t>(S1c + d1)
    c.S = <int16_t>(c.S + d1 + (e0 >> 16))


cdef int loop_grow(LoopOut* o) noexcept nogil:
    """Room for one more 8-byte store (checked realloc, geometric growth)."""
    cdef int64_t cap = o.cap * 2
    cdef uint8_t* p
    if cap < o.size + 256:
        cap = o.size + 256
    p = <uint8_t*>realloc(o.buf, <size_t>cap)
    if p == NULL:
        o.oom = 1
        return -1
    o.buf = p
    o.cap = cap
    return 0


cdef inline void loop_carry(LoopOut* o) noexcept nogil:
    # +1 on the bytes written: 0xFF bytes become 0x00 and pass it on (never past the first byte,
    # which the interval invariant of §3.7 keeps below 0xFF)
    cdef int64_t x = o.size - 1
    while o.buf[x] == 0xFF:
        o.buf[x] = 0
        x -= 1
    o.buf[x] += 1


cdef void loop_write(LoopOut* o, uint64_t chunk, int w) noexcept nogil:
    """Append w (8..56, whole bytes) bits; chunk holds them and the carry above them."""
    if o.size + 8 > o.cap and loop_grow(o) != 0:
        return                                      # out of memory: reported by the caller
    if chunk >> w:
        loop_carry(o)
    nnr_store_be64(o.buf + o.size, chunk << (64 - w))
    o.size += w >> 3


cdef inline int loop_pend(const LoopEngine* e) noexcept nogil:
    return nnr_msb64(e.L) - 10


cdef inline void loop_flush(LoopEngine* e, LoopOut* o) noexcept nogil:
    """Write the whole bytes of the pend bits (pend >= 8)."""
    cdef int pend = loop_pend(e)
    cdef int w = pend & ~7
    cdef int sh = 9 + (pend & 7)
    loop_write(o, (e.L >> sh) & (((<uint64_t>2) << w) - 1), w)
    e.L = (e.L & (((<uint64_t>1) << sh) - 1)) | ((<uint64_t>2) << sh)


cdef inline void loop_norm(LoopEngine* e) noexcept nogil:
    """Apply the shift an MPS may have left owed."""
    cdef uint32_t n0 = (e.R >> 8) ^ 1
    e.R <<= n0
    e.L <<= n0


cdef inline void loop_bin(LoopEngine* e, LoopOut* o, LCtx* c, int bin) noexcept nogil:
    """Regular bin (§3.7) and context update (§4.4), without a branch on MPS / LPS (LT.step)."""
    cdef uint64_t R = e.R
    cdef uint64_t n0 = (R >> 8) ^ 1
    cdef int64_t S = c.S
    cdef uint64_t mask = <uint64_t>((S >> 15) ^ (bin - 1))        # all ones for an LPS
    cdef const LoopStep* row = <const LoopStep*>nnr_opaque(
        <const char*>&LT.step[bin][32][0] + (S & ~127))
    cdef const LoopStep* t = row + (R >> 4)
    cdef uint64_t Rn = R << n0
    cdef uint64_t u = Rn & mask
    e.L = ((e.L << n0) + u - t.rl) << t.n
    # radd through a pointer of its own: loaded with the index in the address, no lea on the chain
    row = <const LoopStep*>nnr_opaque(row)
    e.R = nnr_opaque_u64(Rn - u) + <uint64_t><int64_t>row[R >> 4].radd
    lctx_update(c, bin)
    if NNR_ENC_UNLIKELY(e.L >= (<uint64_t>1) << LOOP_FLUSH):
        loop_flush(e, o)


cdef inline void loop_bypass(LoopEngine* e, LoopOut* o, uint32_t value, int n) noexcept nogil:
    """n (0..31) bypass bins, first bin most significant: L = 2^n L + value R (§3.7)."""
    loop_norm(e)
    if loop_pend(e) + n > LOOP_BYPASS_MAX:
        loop_flush(e, o)
    e.L = (e.L << n) + <uint64_t>value * e.R
    if e.L >> LOOP_FLUSH:
        loop_flush(e, o)


cdef inline int64_t loop_bit_position(const LoopEngine* e, const LoopOut* o) noexcept nogil:
    """§3.8 P (on a normalised engine): every shift of L so far."""
    return 8 * o.size + loop_pend(e)


cdef int loop_from(LoopEngine* f, LoopOut* o, EncEngine* e) noexcept nogil:
    """Take over the §3.7 registers and buffer, the pending bytes written as they stand."""
    # a carry still in L reaches them through loop_carry; returns -1 if out of memory
    cdef int64_t x
    if enc_reserve(e, e.NB + 16) != 0:
        return -1
    if e.NB > 0:
        e.buf[e.size] = <uint8_t>e.buffered
        for x in range(1, e.NB):
            e.buf[e.size + x] = 0xFF
    f.L = <uint64_t>e.L | ((<uint64_t>1) << (33 - e.BL))      # marker at 10 + pend, pend = 23 - BL
    f.R = e.R
    o.buf = e.buf
    o.size = e.size + e.NB
    o.cap = e.cap
    o.oom = 0
    return 0


cdef void loop_to(LoopEngine* f, LoopOut* o, EncEngine* e) noexcept nogil:
    """Hand back as §3.7 registers, in the form CabacEncoder._settle of the twin leaves."""
    # carry absorbed, BL where a write-out leaves it (12..19 once a byte was written), pending the
    # last byte below 0xFF and the 0xFF bytes after it
    cdef int64_t nff = 0
    cdef int pend
    cdef uint64_t L
    loop_norm(f)
    pend = loop_pend(f)
    L = f.L - ((<uint64_t>1) << (10 + pend))          # without the marker
    if o.size + 8 > o.cap:
        loop_grow(o)
    e.buf = o.buf
    e.cap = o.cap
    if o.oom:
        e.oom = 1
        return
    if L >> (9 + pend):
        loop_carry(o)
        L -= (<uint64_t>1) << (9 + pend)
    while pend > 11:
        pend -= 8
        o.buf[o.size] = <uint8_t>(L >> (9 + pend))
        o.size += 1
        L &= ((<uint64_t>1) << (9 + pend)) - 1
    if pend < 4 and o.size > 0:
        o.size -= 1
        L += (<uint64_t>o.buf[o.size]) << (9 + pend)
        pend += 8
    e.L = <uint32_t>L
    e.R = <uint32_t>f.R
    e.BL = 23 - pend
    e.NB = 0
    if o.size > 0:
        while nff < o.size - 1 and o.buf[o.size - 1 - nff] == 0xFF:
            nff += 1
        e.buffered = o.buf[o.size - 1 - nff]
        e.NB = nff + 1
        o.size -= nff + 1
    e.size = o.size


cdef int enc_settle(EncEngine* e) noexcept nogil:
    """The engine in the form every tensor ends in (pytwin_enc's CabacEncoder._settle)."""
    # only the representation changes, not the codeword; returns -1 if out of memory
    cdef LoopEngine f
    cdef LoopOut o
    if loop_from(&f, &o, e) != 0:
        return -1
    loop_to(&f, &o, e)
    return 0


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
    t = nnr_msb64(<uint64_t>(a - N))
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


cdef void _pseudo_walk(Shadow* sh, const EncJob* j) noexcept nogil:
    """§6.5's pseudo pass: the scan of §7 with row skipping and block-row resets, charging every
    position's pseudo bins to the estimators (_pseudo_level)."""
    cdef int N = j.N, dq = j.dq
    cdef int64_t rows = j.rows, W = j.W
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base
    cdef int64_t i, k, b = 0
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
        r1 = r0 + bh
        if r1 > rows:
            r1 = rows
        if br > 0:
            shadow_flush(sh)            # the estimators restart; the costs run on
            shadow_reset_all(sh)
            if j.variant == 1:
                cls = 0                 # REF-QUIRK: only NNCodec-1 resets the neighbour here
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
                    # REF-QUIRK: the pseudo pass's neighbour is i (§6.5), its DQ state moves with
                    # the level k of §8.2 (an index of the wrong parity rounded, as in the coding)
                    cls = 0 if i == 0 else (1 if i < 0 else 2)
                    if dq:
                        k = i
                        if i > 0:
                            k = (i + (s & 1)) >> 1
                        elif i < 0:
                            k = (i - (s & 1)) >> 1
                        s = NNR_DQ_NEXT[s][k & 1]
            c0 = c1
    shadow_flush(sh)


# ---------------------------------------------------------------------------------------------
# The real coding of the levels (B.7) on the level loop's engine.  Tensors without TCA, HDSP or
# codebook take the plain loop (context selection 3s + c, 48 + c, 53 + 2j + sign, 53 + 4N + i,
# the binarization of §5.1 unbounded), tensors with TCA or HDSP but no codebook the same loop with
# their context selection, the rest (codebooks) _code_level, a transcription of _enc_level.

ctypedef struct WithDQ:
    int unused
ctypedef struct NoDQ:
    int unused
ctypedef fused DQMode:          # compiles each loop once with and once without DQ
    WithDQ
    NoDQ


cdef inline int _code_remainder(LoopEngine* e, LoopOut* o, LCtx* remc, int64_t rem) noexcept nogil:
    """abs_remainder (§5.1): Exp-Golomb-0, t = floor(log2(rem + 1)) context-coded ones (at most
    31), the zero, then rem + 1 - 2^t in t bypass bins; returns the regular bins."""
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
    cdef LCtx* remc = ctx + CTX_GTX + 4 * N
    cdef const uint8_t* nxt = &NNR_DQ_NEXT[0][0]
    cdef bint dq = DQMode is WithDQ
    for x in range(n):
        i = lv[x]
        m = i >> 63                     # the sign without a jump: it is a coin toss
        sign = m & 1
        a = (i ^ m) - m
        if dq:
            # §8.2; REF-QUIRK: an index of the wrong parity is rounded by the same formula
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
    """_code_plain with TCA reference and / or HDSP history: §6.2's contexts without jumps."""
    cdef const int32_t* lv = j.levels + start
    cdef const int32_t* ref = j.tca + start if j.tca != NULL else NULL
    cdef const uint8_t* hist = j.hist + start if j.hist != NULL else NULL
    cdef int N = j.N
    cdef LoopEngine e = ep[0]
    cdef int64_t s = s_io[0], cls = cls_io[0]
    cdef int64_t x, i, a, m, sign, b, ab, tca, h, sc, gc, over, u
    cdef int64_t bins = 0, rounded = 0
    cdef LCtx* remc = ctx + CTX_GTX + 4 * N
    cdef bint dq = DQMode is WithDQ
    for x in range(n):
        i = lv[x]
        m = i >> 63
        sign = m & 1
        a = (i ^ m) - m
        if dq:
            # §8.2; REF-QUIRK: an index of the wrong parity is rounded by the same formula
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
        gc = (CTX_GTX + sign) ^ (((CTX_GTX + sign) ^ (CTX_GTX + 2 * N)) & tca)
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
    """_enc_level on the level loop's engine."""
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
            ci = CTX_GTX + 4 * N
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


cdef int _code_levels(EncEngine* ep, CabacCtx* ctx, EncJob* j) noexcept nogil:
    """B.7, the real coding: the scan of §7 with row skipping and block-row resets (as _pseudo_walk)."""
    cdef LoopEngine e
    cdef LoopOut o
    cdef int N = j.N, dq = j.dq
    cdef int nctx = 90 + 4 * N
    cdef int64_t rows = j.rows, W = j.W
    cdef int64_t r, c, r0, r1, c0, c1, bh, bw, br, base, i, k, run, b = 0
    cdef int64_t s = 0, cls = 0
    cdef bint full
    cdef int h = 0, a
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
    for a in range(nctx):
        lctx_set(&lctx[a], ctx[a].S0, ctx[a].S - 16 * ctx[a].S0, &ctx[a])
        lctx_set(&initial[a], NNR_PARAM_SETS[ctx[a].k][2], NNR_PARAM_SETS[ctx[a].k][3], &ctx[a])
    stats[0] = 0
    stats[1] = 0
    sign_mode = codebook_bounds(j.cbsize, j.cbzero, &m_plus, &m_minus)
    scan_block(rows, W, j.eff_scan, &bh, &bw)
    for br in range(j.n_brows):
        r0 = br * bh
        r1 = r0 + bh
        if r1 > rows:
            r1 = rows
        if br > 0:
            memcpy(lctx, initial, nctx * sizeof(LCtx))
            cls = 0
            loop_norm(&e)
            e.R = 256                   # range reset (§3.6)
            # the entry point's raw material (§3.8): bit position and low register here
            j.epw[3 * (br - 1)] = loop_bit_position(&e, &o)
            j.epw[3 * (br - 1) + 1] = <int64_t>(e.L & 511)
            j.epw[3 * (br - 1) + 2] = s
        c0 = 0
        while c0 < W:
            c1 = c0 + bw
            if c1 > W:
                c1 = W
            # whole rows (scan order 0): a run of rows up to the next skipped one in one call
            full = fast and c1 - c0 == W
            run = r0
            for r in range(r0, r1):
                if rowskip and j.skip[r]:
                    if full and run < r:
                        fast_fn(NULL, &e, &o, lctx, j, run * W, (r - run) * W, &s, &cls, stats)
                    run = r + 1
                    # REF-QUIRK: RowWidth parity-0 transitions for a skipped segment (§7.3)
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
                        # §8.2 mapping. REF-QUIRK: an index of the wrong parity for Q(s & 1) (the
                        # reference clips TCQ output in bit-depth mode and assumes one transition
                        # per skipped position) is rounded by the same formula, as NNCodec does.
                        if i > 0:
                            k = (i + (s & 1)) >> 1
                        else:
                            k = (i - (s & 1)) >> 1
                        if ((i ^ s) & 1) != 0:
                            stats[1] += 1
                    if ref != NULL:
                        b = ref[base + c]
                    if hist != NULL:
                        h = hist[base + c]
                    if not j.no_bins:
                        _code_level(&e, &o, lctx, k, <int>s, <int>cls, b, h, N, sign_mode,
                                    m_plus, m_minus, &stats[0])
                    cls = 0 if k == 0 else (1 if k < 0 else 2)
                    if dq:
                        s = NNR_DQ_NEXT[s][k & 1]
            if full and run < r1:
                fast_fn(NULL, &e, &o, lctx, j, run * W, (r1 - run) * W, &s, &cls, stats)
            c0 = c1
    loop_to(&e, &o, ep)
    for a in range(nctx):
        lctx_get(&ctx[a], &lctx[a])
    free(lctx)
    ep.bins += stats[0]
    j.rounded += stats[1]
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
        _pseudo_walk(sh, j)
    _signal_params(e, ctx, sh, j)
    j.P0 = enc_bit_position(e)
    # 6. range reset; REF-QUIRK: NNCodec-1 resets also for a single block row (§11).
    if j.eff_scan > 0 and (j.n_brows > 1 or j.variant == 1):
        e.R = 256
    # 7. levels.
    status = _code_levels(e, ctx, j)
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
        cdef int sign_mode
        cdef int64_t m_plus, m_minus
        nb = operator.index(neighbour)
        if s < 0 or s > 7:
            raise ValueError("dq_state must be 0..7")
        if n_ < 1 or n_ > 256:
            raise ValueError("N must be 1..256")
        if self.nctx < 90 + 4 * n_:
            raise ValueError(f"context memory holds {self.nctx} contexts, needs {90 + 4 * n_}")
        if bb < -2147483648 or bb > 2147483647:
            raise ValueError("b must fit int32")
        if k_ < -2147483648 or k_ > 2147483647:
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
        sign_mode = codebook_bounds(cbs, cbz, &m_plus, &m_minus)
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
