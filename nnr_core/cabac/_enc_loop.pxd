# cython: language_level=3
"""The encoder's level-loop engine: CABAC §3.7 with a 64-bit low register and
deferred byte output, for the level loops of ``_enc_levels.pyx``.

``LoopEngine`` keeps the bits of L that are not written yet in 64 bits: the 9 bits aligned with
R, `pend` bits above them, a possible carry bit and, above that, a marker bit (so pend is never
counted: it is the marker's position minus 10).  Whole bytes are written only when the marker
reaches bit LOOP_FLUSH, several at a time; a carry is propagated into the bytes already in the
buffer (the codeword is the same integer whatever the moment its bytes are written).  Like the
decoder's WinEngine it renormalises lazily: after an MPS, R = rMPS (128..510) and L unshifted,
the one shift owed (R < 256) is applied at the start of the next bin, off the R -> rLPS -> R
chain.  Bins take no jump on MPS / LPS: per-(bin, state) tables (``LT``, filled once by
``loop_tables_init``).  ``loop_from`` / ``loop_to`` convert from and back to the CABAC §3.7
registers (``EncEngine``, ``_enc_engine.pxd``) around the level loop.
"""
from libc.stdint cimport uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t
from libc.string cimport memset

from nnr_core.cabac._engine cimport (CabacCtx, NNR_CURVE, NNR_NUM_PARAM_SETS, NNR_PARAM_SETS,
                                     nnr_rlps_r4, nnr_renorm_shift)
from nnr_core.cabac._enc_engine cimport EncEngine, buf_grow, enc_reserve


cdef extern from "nnr_bits.h":
    bint NNR_UNLIKELY(bint x) noexcept nogil
    const void* nnr_opaque(const void* p) noexcept nogil
    uint64_t nnr_opaque_u64(uint64_t x) noexcept nogil
    void nnr_store_be64(uint8_t* p, uint64_t x) noexcept nogil
    int nnr_msb64(uint64_t x) noexcept nogil


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


# CABAC §3.7 for coding `bin` in a context of state S, with a range R that may still owe its MPS
# shift (rLPS = nnr_rlps_r4 of nnr_cabac_tables.h): LT.step[bin][(S >> 7) + 32][R >> 4] =
# (radd, n, rl) is (-rLPS, 0, 0) if bin is the MPS and (rLPS << n, n, rLPS) if it is the LPS, n its
# renormalisation.  With u = the normalised R for an LPS and 0 for an MPS, the new R is
# R - u + radd and the new L (L + u - rl) << n.  A row is 128 bytes, so its offset is S & ~127.
#
# CABAC §4.4 as tables.  The fast estimator: LT.s0[bin][256 * (sh0 - 4) + 128 + S0] holds the new
# table index (low 16 bits) and 16 * (new S0 - S0) (high 16 bits); sh0 is 4..7 in every parameter
# set and |S0| <= 123 (CABAC §4.5).  The slow estimator kept as S1 + 128 * c1 (c1 = 32 * sh1 + 16,
# the row of the curve shifted by sh1, curve_sh): its step is LT.s1[(S1 + 128 * c1) >> 7] for bin 1
# and LT.s1[256 + ((S1 + 128 * c1 + 127) >> 7)] for bin 0 ((-S1) >> 7 = -((S1 + 127) >> 7)).
# All in one struct (C storage, include/nnr_enc_loop.h), so that the level loop reaches them
# from one base register.
cdef extern from "nnr_enc_loop.h":
    ctypedef struct LoopStep "NnrLoopStep":
        int16_t radd
        uint8_t n
        uint8_t rl
    ctypedef struct LoopTables "NnrLoopTables":
        LoopStep step[2][64][32]
        int32_t s0[2][1024]
        int16_t s1[512]
    LoopTables LT "NNR_LT"


cdef inline int curve_sh(int x) noexcept nogil:
    """Appendix A.2's step shifted: NNR_CURVE[x & 31] >> (x >> 5), x = 32 sh + index."""
    return NNR_CURVE[x & 31] >> (x >> 5)


cdef inline int loop_tables_init() noexcept nogil:
    """Fill LT from Appendix A.1 / A.2; -1 if a parameter set has sh0 outside 4..7."""
    cdef int row, x, p, r, n, sh, bin, S0, g, v
    for row in range(64):
        p = row - 32 if row >= 32 else 32 - row
        if p > 31:
            p = 31
        for x in range(32):
            r = nnr_rlps_r4(p, x)
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
    for x in range(NNR_NUM_PARAM_SETS):
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
        LT.s1[x] = <int16_t>curve_sh(x)
        v = 2 * (32 * ((x - 1) >> 5) + 16) - x
        LT.s1[256 + x] = <int16_t>curve_sh(v) if 0 <= v < 256 else 0
    return 0


# One context in the level loop (CABAC §4.1): S = S1 + 16*S0, and both estimators as their table
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
    """CABAC §4.4 from the tables, without a branch on the bin (m = bin - 1, (x ^ m) - m = g*x)."""
    cdef int m = bin - 1
    cdef int32_t e0 = LT.s0[bin][c.S0t]
    cdef int64_t S1c = c.S1c
    cdef int d1 = LT.s1[((S1c + (127 & m)) >> 7) + (256 & m)]
    d1 = (d1 ^ m) - m
    c.S0t = <uint16_t>e0
    c.S1c = <int16_t>(S1c + d1)
    c.S = <int16_t>(c.S + d1 + (e0 >> 16))


cdef inline int loop_grow(LoopOut* o) noexcept nogil:
    """Room for one more 8-byte store (geometric growth); -1 and oom set if out of memory."""
    if buf_grow(&o.buf, &o.cap, o.size + 256) != 0:
        o.oom = 1
        return -1
    return 0


cdef inline void loop_carry(LoopOut* o) noexcept nogil:
    # +1 on the bytes written: 0xFF bytes become 0x00 and pass it on (never past the first byte,
    # which the interval invariant of CABAC §3.7 keeps below 0xFF)
    cdef int64_t x = o.size - 1
    while o.buf[x] == 0xFF:
        o.buf[x] = 0
        x -= 1
    o.buf[x] += 1


cdef inline void loop_write(LoopOut* o, uint64_t chunk, int w) noexcept nogil:
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
    """Regular bin (CABAC §3.7) and context update (CABAC §4.4), no branch on MPS/LPS (LT.step)."""
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
    if NNR_UNLIKELY(e.L >= (<uint64_t>1) << LOOP_FLUSH):
        loop_flush(e, o)


cdef inline void loop_bypass(LoopEngine* e, LoopOut* o, uint32_t value, int n) noexcept nogil:
    """n (0..31) bypass bins, first bin most significant: L = 2^n L + value R (CABAC §3.7)."""
    loop_norm(e)
    if loop_pend(e) + n > LOOP_BYPASS_MAX:
        loop_flush(e, o)
    e.L = (e.L << n) + <uint64_t>value * e.R
    if e.L >> LOOP_FLUSH:
        loop_flush(e, o)


cdef inline int64_t loop_bit_position(const LoopEngine* e, const LoopOut* o) noexcept nogil:
    """CABAC §3.8 P (on a normalised engine): every shift of L so far."""
    return 8 * o.size + loop_pend(e)


cdef inline int loop_from(LoopEngine* f, LoopOut* o, EncEngine* e) noexcept nogil:
    """Take over the CABAC §3.7 registers and buffer, the pending bytes written as they stand."""
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


cdef inline void loop_to(LoopEngine* f, LoopOut* o, EncEngine* e) noexcept nogil:
    """Hand back as CABAC §3.7 registers, in the form CabacEncoder._settle of the twin leaves."""
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


cdef inline int enc_settle(EncEngine* e) noexcept nogil:
    """The engine in the form every tensor ends in (pytwin_enc's CabacEncoder._settle)."""
    # only the representation changes, not the codeword; returns -1 if out of memory
    cdef LoopEngine f
    cdef LoopOut o
    if loop_from(&f, &o, e) != 0:
        return -1
    loop_to(&f, &o, e)
    return 0


cdef inline void lctx_load(LCtx* lctx, LCtx* initial, const CabacCtx* ctx, Py_ssize_t n) noexcept nogil:
    """The level loop's copies of contexts 0..n-1: their state now and, unless initial is NULL,
    the state a block-row reset (CABAC §6.3) gives them (their parameter set's)."""
    cdef Py_ssize_t a
    for a in range(n):
        lctx_set(&lctx[a], ctx[a].S0, ctx[a].S - 16 * ctx[a].S0, &ctx[a])
        if initial != NULL:
            lctx_set(&initial[a], NNR_PARAM_SETS[ctx[a].k][2], NNR_PARAM_SETS[ctx[a].k][3], &ctx[a])


cdef inline void lctx_store(CabacCtx* ctx, const LCtx* lctx, Py_ssize_t n) noexcept nogil:
    """The states of the level loop's copies back into contexts 0..n-1."""
    cdef Py_ssize_t a
    for a in range(n):
        lctx_get(&ctx[a], &lctx[a])
