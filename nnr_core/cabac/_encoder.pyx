# cython: language_level=3
"""DeepCABAC payload encoder, bit-exact with NNCodec 2.1.3 (variant 2) and NNCodec 1.x
(variant 1): the mirror of procedure B of CABAC §12 (CABAC §13) and the Python class.
API contract: ``nnr_core/cabac/README.md``; pure-Python twin: ``pytwin_enc.py`` (which also holds
the argument checks both use).

Arguments are checked with the GIL; the per-tensor procedure then runs ``with nogil`` on C
pointers and reports a status code that is turned into an exception afterwards.  It is put
together from one module per job: the CABAC §3.7 engine (``_enc_engine.pxd``) codes qp_offset, the
edition-2 flags, the row-skip list and the parameter-set signalling (CABAC §6.4) of this module; the
parameter-set pass (``_enc_pseudo.pyx``) chooses the sets as NNCodec does (CABAC §6.5); the level
loops (``_enc_levels.pyx``, on the level-loop engine of ``_enc_loop.pxd``) code the levels.
"""
from libc.stdint cimport uint8_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memset

import operator

import numpy as np
cimport numpy as cnp

from nnr_core.errors import EncoderConfigError
from nnr_core.cabac.pytwin_enc import prepare, _has_entry_points
from nnr_core.cabac.pytwin_levels import check_codebook

from nnr_core.cabac._engine cimport (
    CabacCtx, ctx_set, ctx_init_all, ctx_param_set_flag, ctx_row_skip, num_contexts,
    neighbour_class, SIGNAL_MAX, signalled_contexts)
from nnr_core.cabac._enc_engine cimport (
    EncEngine, enc_init, enc_reserve, enc_bin, enc_bit_position, enc_bypass_bits, enc_terminate,
    enc_flush)
from nnr_core.cabac._enc_job cimport EncJob, ST_OK, ST_NOMEM
from nnr_core.cabac._enc_levels cimport code_levels, code_one_level
from nnr_core.cabac._enc_pseudo cimport shadow_new, shadow_free, pseudo_pass
from nnr_core.cabac._shadow cimport Shadow, shadow_best

from nnr_core.cabac._contexts cimport ContextMemory
cnp.import_array()

__all__ = ["encode_payload", "CabacEncoder", "regular_bins_coded"]

# Regular bins coded by every finished CabacEncoder of this process (statistics for benchmarks;
# updated with the GIL held).
cdef int64_t _regular_bins_total = 0


def regular_bins_coded():
    """Regular bins coded so far by all finished encoders of this process."""
    return _regular_bins_total


# ---------------------------------------------------------------------------------------------
# The per-tensor procedure (CABAC §12 procedure B, mirrored).

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
    """Context parameter-set signalling (CABAC §6.4), both variants: the decoder's list in order."""
    cdef int32_t idx[SIGNAL_MAX]
    cdef uint8_t coded[SIGNAL_MAX]
    cdef int a, n = signalled_contexts(idx, coded, j.N, j.dq, j.tca_on, j.hdsp_flag, j.cbsize, j.cbzero,
                                       j.variant)
    cdef int flag_ctx = ctx_param_set_flag(j.N)
    for a in range(n):
        _signal_one(e, ctx, sh, idx[a], coded[a], flag_ctx)


cdef int _encode_tensor_c(EncEngine* e, CabacCtx* ctx, Shadow* sh, EncJob* j) noexcept nogil:
    """Procedure B of CABAC §12, mirrored (CABAC §13 step 3).  Returns a status code (ST_*)."""
    cdef int N = j.N
    cdef int64_t r
    cdef int status
    # 1. qp_offset: 6 + QpDensity bypass bins, two's complement.
    if j.qp_bits:
        enc_bypass_bits(e, (<uint64_t>j.qp_offset) & (((<uint64_t>1) << j.qp_bits) - 1),
                        j.qp_bits)
    # 2.-3. context memory, all set 0.
    ctx_init_all(ctx, num_contexts(N))
    # 4. edition-2 flags and the row-skip list.
    if j.edition2_flags:
        if j.parent:
            enc_bypass_bits(e, j.hdsp_flag, 1)
        enc_bypass_bits(e, j.rowskip_flag, 1)
        if j.rowskip_flag:
            for r in range(j.rows):
                enc_bin(e, &ctx[ctx_row_skip(N)], j.skip[r])
    # 5. parameter sets: NNCodec's pseudo pass (CABAC §6.5), then the signalling (CABAC §6.4).
    if sh != NULL:
        pseudo_pass(sh, j)
    _signal_params(e, ctx, sh, j)
    j.P0 = enc_bit_position(e)
    # 6. range reset; REF-QUIRK: NNCodec-1 resets also for a single block row (CABAC §11).
    if j.eff_scan > 0 and (j.n_brows > 1 or j.variant == 1):
        e.R = 256
    # 7. levels.
    status = code_levels(e, ctx, j)
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
        enc_init(&self.eng)
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
        """One level k with the contexts of CABAC §6.2, coded on the level-loop engine; the engine
        is left in the form every tensor ends in (the twin's _settle)."""
        cdef int64_t k_ = operator.index(k)
        cdef int s = operator.index(dq_state)
        cdef int n_ = operator.index(N)
        cdef int64_t cbs = operator.index(codebook_size)
        cdef int64_t cbz = operator.index(cb_zero_offset)
        cdef int64_t bb = operator.index(b)
        cdef int cls = neighbour_class(operator.index(neighbour))
        cdef int status
        self._check_level_args(s, n_, bb)
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
        status = code_one_level(&self.eng, self.ctx, self.nctx, k_, s, cls, bb, 1 if h else 0,
                                n_, cbs, cbz)
        if status != ST_OK:
            raise MemoryError("cannot grow the payload buffer")

    def state(self):
        return {"L": self.eng.L, "R": self.eng.R, "BL": self.eng.BL, "NB": self.eng.NB,
                "buffered": self.eng.buffered, "bytes_written": self.eng.size}


    # -- payload-level API ------------------------------------------------------------------
    def encode_tensor(self, t, variant=2):
        """Code one tensor (CABAC §12 procedure B, mirrored)."""
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
        self._alloc(num_contexts(job.N))
        # Pre-size the output: a few bits per element is typical; it grows if needed.
        if enc_reserve(&self.eng, (p.rows * p.W) // 2 + p.rows // 8 + 64) != 0:
            raise MemoryError("cannot allocate the payload buffer")
        if job.param_opt:
            sh = shadow_new(num_contexts(job.N), job.N)
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
        """Terminating bin 1 and flush (CABAC §3.7); returns the payload."""
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
    """The entry points (BitOffsetDelta, ep_arith_value, ep_dq_state) of one tensor (CABAC §3.8)
    from what the encoder recorded at each block-row start (bit position P, low register L, DQ
    state) and the finished payload: the decoder's value V >> 7 there is the codeword's 9 bits at P
    minus the low register's 9 least significant bits (which sit at P .. P + 8), modulo 512 (the
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
    """Code the tensors of one NDU payload back to back (CABAC §13); returns the payload and, per
    tensor, the entry points (BitOffsetDelta, ep_arith_value, ep_dq_state) (CABAC §13.5), derived
    while coding (no decode of the payload).  stats: a dict that receives "rounded", the number of
    DQ indices of the wrong parity that were rounded to a level (the decoder then returns other
    indices)."""
    tensors = list(tensors)
    enc = CabacEncoder()
    for t in tensors:
        enc.encode_tensor(t, variant)
    payload = enc.finish()
    if stats is not None:
        stats["rounded"] = enc.rounded
    return payload, [[] if raw is None else entry_points_from(payload, raw[0], raw[1])
                     for raw in enc.entry_raw]
