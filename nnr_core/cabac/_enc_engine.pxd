# cython: language_level=3
"""The DeepCABAC encoding engine of CABAC §3.7: the registers L, R, BL, NB and the
buffered byte in a C struct, output into a growable C buffer (checked ``realloc``), regular bins
with the context update of CABAC §4.4, bypass and terminating bins, the flush.

It codes everything but the levels: qp_offset, the edition-2 flags, the row-skip list, the
parameter-set signalling, the terminating bin and the low-level API.  The levels are coded on the
level-loop engine (``_enc_loop.pxd``), which takes these registers over and hands them back.
Everything is ``cdef inline ... noexcept nogil``; a failed ``realloc`` sets ``oom``, which the
caller turns into a ``MemoryError``.
"""
from libc.stdint cimport uint8_t, int32_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport realloc
from libc.string cimport memset

from nnr_core.cabac._engine cimport CabacCtx, NNR_RLPS_TABLE, nnr_renorm_shift, ctx_update


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


cdef inline void enc_init(EncEngine* e) noexcept nogil:
    """CABAC §3.7 initialisation: L = 0, R = 510, BL = 23, NB = 0, nothing written."""
    memset(e, 0, sizeof(EncEngine))
    e.R = 510
    e.BL = 23


cdef inline int buf_grow(uint8_t** buf, int64_t* cap, int64_t need) noexcept nogil:
    """Grow *buf (capacity *cap) to at least `need` bytes and at least twice its capacity, by a
    checked realloc; -1, *buf untouched, if out of memory."""
    cdef int64_t c = cap[0] * 2
    cdef uint8_t* p
    if c < need:
        c = need
    p = <uint8_t*>realloc(buf[0], <size_t>c)
    if p == NULL:
        return -1
    buf[0] = p
    cap[0] = c
    return 0


cdef inline int enc_reserve(EncEngine* e, int64_t extra) noexcept nogil:
    """Make room for `extra` more bytes (geometric growth); -1 and oom set if out of memory."""
    if e.size + extra <= e.cap:
        return 0
    if buf_grow(&e.buf, &e.cap, e.size + extra + 256) != 0:
        e.oom = 1
        return -1
    return 0


cdef inline void enc_write_out(EncEngine* e) noexcept nogil:
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
    """Regular bin (CABAC §3.7) followed by the context update (CABAC §4.4)."""
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
    """CABAC §3.8 P as the decoder will count it: every shift of L is one shift of the decoder's V.
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


cdef inline void enc_flush(EncEngine* e) noexcept nogil:
    """CABAC §3.7 flush after the terminating bin: pending bytes, low register, stop bit, zeros."""
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
