# cython: language_level=3
"""DeepCABAC payload decoder: procedure B of CABAC §12 on top of the engine in
``_engine.pxd`` (CABAC §3, CABAC §4): qp_offset, the edition-2 flags and the row-skip list, the
parameter-set signalling of CABAC §6.4 (both variants, NNCodec-2 layout of CABAC §6.1) here; the
levels (CABAC §5, CABAC §6.2, CABAC §7, CABAC §8.2) in the level loops of ``_dec_levels.pyx``; the
Python class, its argument checks and the block-row parallel decode.  API contract:
``nnr_core/cabac/README.md``.

Arguments are checked with the GIL; the whole per-tensor procedure (qp_offset, edition-2 flags,
signalling, level loop) then runs ``with nogil`` on C pointers and reports a status code that is
turned into an exception afterwards, located by element name and payload bit offset.
"""
from libc.stdint cimport uint8_t, int32_t, uint32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

import operator

import numpy as np
cimport numpy as cnp

from nnr_core.errors import (ConstraintViolationError, EntropyDecodingError, ResourceLimitError,
                        SyntaxValueError)
from nnr_core.cabac.params import TensorCoding, TensorResult, VARIANT_NNCODEC1, VARIANT_NNCODEC2

from nnr_core.cabac._engine cimport (
    CabacEngine, CabacCtx, cabac_init, cabac_bytes_read, cabac_bit_position, cabac_decode_bin,
    cabac_decode_bypass, cabac_decode_bypass_bits, cabac_decode_terminate, cabac_reset_range,
    ctx_set, ctx_init_all, SIGNAL_MAX, signalled_contexts, ctx_param_set_flag, ctx_row_skip,
    num_contexts, neighbour_class, num_block_rows)
from nnr_core.cabac._dec_job cimport (
    TensorJob, OVERREAD_BAIL, LEVEL_MAX, BINS_PER_BIT, CAPACITY_SLACK_BITS, ST_OK, ST_OVERREAD,
    ST_LEVEL_RANGE, ST_RECON_RANGE, ST_NO_HISTORY, ST_BAD_RESET, ST_NO_MEMORY, ST_CAPACITY,
    PH_QP, PH_FLAGS, PH_ROW_SKIP, PH_SIGNALLING, PH_LEVELS)
from nnr_core.cabac._dec_levels cimport decode_rows_any, decode_levels_from_start, decode_one_level

from nnr_core.cabac._contexts cimport ContextMemory
cnp.import_array()

__all__ = ["decode_payload", "CabacDecoder", "parallel_fallbacks", "TensorCoding", "TensorResult",
           "VARIANT_NNCODEC1", "VARIANT_NNCODEC2"]

cdef enum:
    MAX_ELEMENTS = 2147483647

# The element named in errors of each phase (PH_* of _dec_job.pxd).
_PHASE_NAMES = ("qp_offset", "row_skip_enabled_flag", "row_skip_list", "param_set_flag",
                "abs_level")


# ---------------------------------------------------------------------------------------------
# The per-tensor procedure up to the levels (CABAC §12 procedure B, steps 1-5).

cdef inline void _signal_one(CabacEngine* e, CabacCtx* ctx, int idx, bint coded,
                             int flag_ctx) noexcept nogil:
    cdef int k = 0
    if coded:
        if cabac_decode_bin(e, &ctx[flag_ctx]):          # param_set_flag
            k = 1 + <int>cabac_decode_bypass_bits(e, 3)  # param_set_idx_minus1
    ctx_set(&ctx[idx], k)


cdef int _signal_params(CabacEngine* e, CabacCtx* ctx, int N, int dq, int tca, int hdsp,
                        int64_t cbsize, int64_t cbzero, int variant) noexcept nogil:
    """Context parameter-set signalling (CABAC §6.4), both variants, NNCodec-2 index layout; stops
    (ST_OVERREAD) once it has read past the payload end by more than OVERREAD_BAIL bytes."""
    cdef int32_t idx[SIGNAL_MAX]
    cdef uint8_t coded[SIGNAL_MAX]
    cdef int a, n = signalled_contexts(idx, coded, N, dq, tca, hdsp, cbsize, cbzero, variant)
    cdef int flag_ctx = ctx_param_set_flag(N)
    for a in range(n):
        _signal_one(e, ctx, idx[a], coded[a], flag_ctx)
        if e.overread > OVERREAD_BAIL:
            return ST_OVERREAD
    return ST_OK


cdef int _decode_prelude(CabacEngine* ep, CabacCtx* ctx, TensorJob* j) noexcept nogil:
    """Procedure B of CABAC §12 up to the levels: qp_offset, the edition-2 flags and row-skip list,
    the parameter-set signalling.  Sets j.P0 (block row 0 starts there) and j.n_brows."""
    cdef int N = j.N
    cdef int nctx = num_contexts(N)
    cdef int64_t r, u
    # 1. qp_offset: 6 + QpDensity bypass bins, two's complement.
    j.phase = PH_QP
    if j.has_qp:
        u = <int64_t>cabac_decode_bypass_bits(ep, j.qp_bits)
        if u >= ((<int64_t>1) << (j.qp_bits - 1)):
            u -= (<int64_t>1) << j.qp_bits
        j.qp_offset = u
    # 2.-3. context memory, all set 0.
    ctx_init_all(ctx, nctx)
    # 4. edition-2 flags and the row-skip list.
    j.phase = PH_FLAGS
    j.hdsp_flag = 0
    j.rowskip_flag = 0
    if j.edition2_flags:
        if j.parent:
            j.hdsp_flag = cabac_decode_bypass(ep)
        j.rowskip_flag = cabac_decode_bypass(ep)
        if j.rowskip_flag:
            j.phase = PH_ROW_SKIP
            for r in range(j.rows):
                j.skip[r] = <uint8_t>cabac_decode_bin(ep, &ctx[ctx_row_skip(N)])
                if ep.overread > OVERREAD_BAIL:
                    return ST_OVERREAD
    if j.hdsp_flag and j.hist == NULL:
        return ST_NO_HISTORY
    # 5. context parameter-set signalling.
    j.phase = PH_SIGNALLING
    if _signal_params(ep, ctx, N, j.dq, j.tca != NULL, j.hdsp_flag, j.cbsize, j.cbzero,
                      j.variant) != ST_OK:
        return ST_OVERREAD
    j.P0 = cabac_bit_position(ep)        # block row 0 starts here (entry points, CABAC §3.8)
    j.phase = PH_LEVELS
    j.n_brows = num_block_rows(j.rows, j.eff_scan)
    # 6. Every level still to come takes a bin: more than the rest of the payload can hold is an
    # error now (the work of a corrupt stream stays proportional to its payload).
    if not j.no_bins:
        u = j.rows
        if j.rowskip_flag:
            for r in range(j.rows):
                u -= j.skip[r]
        u *= j.W
        if u > BINS_PER_BIT * (8 * <int64_t>(ep.end - ep.start) - j.P0 + CAPACITY_SLACK_BITS):
            j.bad_value = u
            return ST_CAPACITY
    return ST_OK


cdef int _decode_tensor_c(CabacEngine* ep, CabacCtx* ctx, TensorJob* j) noexcept nogil:
    """Procedure B of CABAC §12 for one tensor.  Returns a status code (ST_*)."""
    cdef int status = _decode_prelude(ep, ctx, j)
    if status != ST_OK:
        return status
    return decode_levels_from_start(ep, ctx, j)


cdef bint _engine_at(CabacEngine* e, const uint8_t* data, Py_ssize_t size, int64_t P,
                     int64_t arith) noexcept nogil:
    """Position an engine at bit position P (CABAC §3.8) with the offset `arith` after a range
    reset, as an entry point describes it: bytes_read = 2 + P // 8, B = P % 8 - 8, and
    V = arith << 7 plus the look-ahead bits, which are the payload's own bits (the arithmetic never
    touches V's low 7 bits), with the P % 8 not yet read ones zero.  False if P or arith cannot be a
    start."""
    cdef int64_t nread = 2 + P // 8, x
    cdef uint32_t window = 0
    if P < 0 or arith < 0 or arith >= 256 or nread > size + 8:
        return False
    for x in range(nread - 2, nread):            # the two bytes holding bits [8*(P//8), +16)
        window = (window << 8) | (data[x] if x < size else 0)
    e.start = data
    e.end = data + size
    e.ptr = data + (nread if nread < size else size)
    e.overread = nread - size if nread > size else 0
    e.R = 256
    e.B = <int32_t>(P % 8) - 8
    # window holds bits [P - P%8, P - P%8 + 16): shift bits [P, ...) to the top of 16 bits
    window = (window << (P % 8)) & 0xFFFF
    e.V = (<uint32_t>arith << 7) | (window & 0x7F)
    return True


# ---------------------------------------------------------------------------------------------
# Argument checks (with the GIL).

cdef int64_t _range_arg(object t, str name, int64_t lo, int64_t hi) except? -1:
    cdef object v = operator.index(getattr(t, name)) if _is_int(getattr(t, name)) else None
    if v is None:
        raise SyntaxValueError("TensorCoding field is not an integer", element=name,
                               value=getattr(t, name))
    if v < lo or v > hi:
        raise SyntaxValueError("TensorCoding field out of range", element=name, value=v,
                               allowed=f"{lo}..{hi}")
    return v


cdef bint _is_int(object v):
    try:
        operator.index(v)
        return True
    except TypeError:
        return False


cdef object _flat_array(object a, str name, object dtypes, int64_t n):
    if not isinstance(a, np.ndarray):
        raise ConstraintViolationError("array expected", element=name, value=type(a).__name__)
    if a.dtype not in dtypes:
        raise ConstraintViolationError("wrong dtype", element=name, value=str(a.dtype),
                                       allowed=" or ".join(str(d) for d in dtypes))
    if a.size != n:
        raise ConstraintViolationError("array size differs from the tensor size", element=name,
                                       value=a.size, allowed=n)
    return np.ascontiguousarray(a).reshape(-1)


_HDSP_DTYPES = (np.dtype(np.uint8), np.dtype(np.bool_))
_TCA_DTYPES = (np.dtype(np.int32),)


# ---------------------------------------------------------------------------------------------

cdef class CabacDecoder(ContextMemory):
    """One arithmetic codeword (an NDU payload) and its context memory; README.md's API."""

    cdef CabacEngine eng
    cdef bytes buf
    cdef bint bad_start

    def __cinit__(self, payload):
        try:
            self.buf = bytes(memoryview(payload).cast("B"))
        except TypeError:
            raise TypeError("payload must be a bytes-like object") from None
        cabac_init(&self.eng, <const uint8_t*>PyBytes_AS_STRING(self.buf),
                   PyBytes_GET_SIZE(self.buf))
        # The first 9 bits are the offset inside [0, 510): 510 and 511 are no codeword.  Reported
        # when decoding starts (decode_tensor / finish), as the twin does.
        self.bad_start = self.eng.V >= (510 << 7)

    cdef _check_start(self):
        if self.bad_start:
            raise EntropyDecodingError("arithmetic codeword offset out of range",
                                       element="arithmetic codeword",
                                       bit_offset=self._bit_offset(), allowed="offset 0..509")

    cdef int64_t _bit_offset(self):
        return cabac_bit_position(&self.eng) + 9

    # -- low-level API ----------------------------------------------------------------------
    cdef int _check_param_set(self, k) except -1:
        raise SyntaxValueError("parameter set out of range", element="param_set_idx", value=k,
                               allowed="0..8")

    def decode_bin(self, ctx):
        cdef Py_ssize_t c = self._check_ctx(ctx)
        return cabac_decode_bin(&self.eng, &self.ctx[c])

    def decode_bypass(self, n):
        n = operator.index(n)
        if n < 1 or n > 32:
            raise SyntaxValueError("bypass bin count out of range", value=n, allowed="1..32")
        return int(cabac_decode_bypass_bits(&self.eng, n))

    def decode_terminate(self):
        return cabac_decode_terminate(&self.eng)

    def reset_range(self):
        cabac_reset_range(&self.eng)
        if self.eng.V >= (256 << 7):
            raise _bad_reset(self._bit_offset())

    def decode_level(self, dq_state, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
        cdef int s = operator.index(dq_state)
        cdef int n_ = operator.index(N)
        cdef int64_t cbs = operator.index(codebook_size)
        cdef int64_t cbz = operator.index(cb_zero_offset)
        cdef int64_t bb = operator.index(b)
        cdef int64_t k
        cdef int cls = neighbour_class(operator.index(neighbour))
        self._check_level_args(s, n_, bb)
        if cbs < 0 or (cbs > 0 and not 0 <= cbz < cbs) or (cbs == 0 and cbz != 0):
            raise SyntaxValueError("codebook bounds inconsistent", element="codebook_size",
                                   value=(cbs, cbz))
        if cbs == 1:
            return 0
        k = decode_one_level(&self.eng, self.ctx, s, cls, bb, 1 if h else 0, n_, cbs, cbz)
        if k > LEVEL_MAX or k < -LEVEL_MAX - 1:
            raise EntropyDecodingError("level magnitude does not fit int32",
                                       element="abs_remainder", bit_offset=self._bit_offset(),
                                       value=k)
        return k

    def state(self):
        return {"R": self.eng.R, "V": self.eng.V, "B": self.eng.B,
                "bytes_read": cabac_bytes_read(&self.eng), "overread": self.eng.overread,
                "P": cabac_bit_position(&self.eng)}


    # -- payload-level API ------------------------------------------------------------------
    def decode_tensor(self, t, variant=2, jobs=1, entry_points=None):
        """Procedure B of CABAC §12 for one tensor; returns a TensorResult.

        jobs > 1 with `entry_points` (the header's (BitOffsetDelta, ep_arith_value, ep_dq_state)
        per block row after the first): the block rows are split between `jobs` threads, each
        starting at an entry point.  Every thread's end must reproduce the entry point the next
        one started from; otherwise (or on any error) the tensor is decoded again sequentially,
        so results and errors are always the sequential ones."""
        cdef TensorJob job
        cdef int status
        cdef int64_t rows, W, ndim, n, n_brows, scan_order
        cdef int gpi
        cdef cnp.ndarray levels, skip, eps, tca_arr = None, hist_arr = None

        if not isinstance(t, TensorCoding):
            raise TypeError("TensorCoding expected")
        variant = operator.index(variant) if _is_int(variant) else variant
        if variant not in (VARIANT_NNCODEC1, VARIANT_NNCODEC2):
            raise SyntaxValueError("unknown decoder variant", element="variant", value=variant,
                                   allowed="1 or 2")
        # Same order of checks as the twin, so both report the same class for the same input.
        gpi = _range_arg(t, "general_profile_idc", 0, 1)
        if variant == VARIANT_NNCODEC1 and gpi != 0:
            raise ConstraintViolationError("the NNCodec-1 variant exists only for "
                                           "general_profile_idc 0",
                                           element="general_profile_idc", value=gpi, allowed=0)
        rows = _range_arg(t, "rows", 0, 1 << 62)
        W = _range_arg(t, "row_width", 0, 1 << 62)
        job.qp_bits = 6 + _range_arg(t, "qp_density", 0, 7)
        job.dq = _range_arg(t, "dq_flag", 0, 1)
        job.N = _range_arg(t, "cabac_unary_length_minus1", 0, 255) + 1
        ndim = _range_arg(t, "ndim", -(1 << 62), 1 << 62)
        scan_order = _range_arg(t, "scan_order", 0, 15)
        two_d = ndim >= 2 and W > 1 and rows > 1
        if two_d and scan_order > 4:
            raise SyntaxValueError("invalid scan_order", element="scan_order",
                                   value=scan_order, allowed="0..4")
        job.cbsize = _range_arg(t, "codebook_size", -(1 << 62), 1 << 62)
        job.cbzero = _range_arg(t, "cb_zero_offset", -(1 << 62), 1 << 62)
        if job.cbsize > 0:
            cb_ok = 0 <= job.cbzero < job.cbsize
        else:
            cb_ok = job.cbsize == 0 and job.cbzero == 0
        if not cb_ok:
            raise SyntaxValueError("codebook bounds inconsistent", element="cb_zero_offset",
                                   value=(job.cbsize, job.cbzero))
        if job.cbsize and (gpi == 0 or job.dq):
            # CABAC §1: CodebookSize is 0 for gpi 0; CABAC §9.5: codebook tensors have dq_flag 0.
            raise ConstraintViolationError("codebook with general_profile_idc 0 or dq_flag 1",
                                           element="codebook_size", value=job.cbsize)
        if rows * W > MAX_ELEMENTS or job.cbsize > MAX_ELEMENTS:
            raise ResourceLimitError(f"tensor of {rows * W} elements / codebook of "
                                     f"{job.cbsize} entries exceeds the limit of {MAX_ELEMENTS}",
                                     element="tensor_dimensions", value=max(rows * W, job.cbsize),
                                     allowed=f"..{MAX_ELEMENTS}")
        n = rows * W
        job.has_qp = 1 if t.has_qp_offset else 0
        job.parent = 1 if t.parent_node_id_present_flag else 0
        job.eff_scan = scan_order if two_d else 0
        job.edition2_flags = 1 if (gpi == 1 and W > 1 and rows > 1 and job.cbsize != 1) else 0
        job.no_bins = 1 if (gpi == 1 and job.cbsize == 1) else 0
        job.variant = variant
        job.rows = rows
        job.W = W
        if t.tca_reference is not None:
            if gpi != 1:
                raise ConstraintViolationError("temporal context adaptation needs "
                                               "general_profile_idc 1", element="tca_reference")
            tca_arr = _flat_array(t.tca_reference, "tca_reference", _TCA_DTYPES, n)
        if t.hdsp_history is not None:
            hist_arr = _flat_array(t.hdsp_history, "hdsp_history", _HDSP_DTYPES, n)
            if hist_arr.dtype == np.bool_:
                hist_arr = hist_arr.view(np.uint8)
        self._check_start()
        n_brows = num_block_rows(rows, job.eff_scan)
        try:
            levels = np.zeros(n, dtype=np.int32)
            skip = np.zeros(rows, dtype=np.uint8)
        except MemoryError:
            raise ResourceLimitError(f"cannot allocate a tensor of {n} elements",
                                     element="tensor_dimensions", value=n) from None
        eps = np.zeros(max(n_brows - 1, 0) * 3 + 1, dtype=np.int64)
        self._alloc(num_contexts(job.N))
        job.tca = <const int32_t*>cnp.PyArray_DATA(tca_arr) if tca_arr is not None else NULL
        job.hist = <const uint8_t*>cnp.PyArray_DATA(hist_arr) if hist_arr is not None else NULL
        job.out = <int32_t*>cnp.PyArray_DATA(levels)
        job.skip = <uint8_t*>cnp.PyArray_DATA(skip)
        job.ep = <int64_t*>cnp.PyArray_DATA(eps)
        job.qp_offset = 0
        job.bad_value = 0
        job.phase = PH_QP

        if jobs > 1 and entry_points is not None and n_brows > 1 and n >= _PARALLEL_MIN_ELEMENTS:
            with nogil:
                status = _decode_prelude(&self.eng, self.ctx, &job)
            if status == ST_OK:
                status = self._decode_rows_parallel(&job, levels, jobs, entry_points)
        else:
            with nogil:
                status = _decode_tensor_c(&self.eng, self.ctx, &job)
        if status == ST_OK and self.eng.overread > OVERREAD_BAIL:
            status = ST_OVERREAD                # the last row segment ran past the end

        if status != ST_OK:
            where = self._bit_offset()
            if status == ST_OVERREAD:
                raise EntropyDecodingError("payload ends inside the tensor (read past its end)",
                                           element=_PHASE_NAMES[job.phase], bit_offset=where)
            if status == ST_LEVEL_RANGE:
                raise EntropyDecodingError("level magnitude does not fit int32",
                                           element="abs_remainder", bit_offset=where,
                                           value=job.bad_value)
            if status == ST_RECON_RANGE:
                raise EntropyDecodingError("reconstruction index does not fit int32",
                                           element="abs_remainder", bit_offset=where,
                                           value=job.bad_value)
            if status == ST_CAPACITY:
                raise EntropyDecodingError("the rest of the payload cannot hold the tensor's levels "
                                           "(each takes a bin, a bin at least 1/128 bit)",
                                           element="payload length", bit_offset=where,
                                           value=job.bad_value,
                                           allowed=f"..{BINS_PER_BIT * (8 * len(self.buf) - job.P0 + CAPACITY_SLACK_BITS)}")
            if status == ST_BAD_RESET:
                raise _bad_reset(where)
            if status == ST_NO_MEMORY:
                raise ResourceLimitError("out of memory for the decoder's context copies",
                                         element="tensor_dimensions", bit_offset=where)
            if status == ST_NO_HISTORY:
                raise ConstraintViolationError("hist_dep_sig_prob_enabled_flag is 1 but no HDSP "
                                               "history is available for the tensor",
                                               element="hist_dep_sig_prob_enabled_flag",
                                               bit_offset=where, value=1)
            raise EntropyDecodingError(f"decoder status {status}", bit_offset=where)

        ep_list = []
        for x in range(n_brows - 1):
            ep_list.append((int(eps[3 * x]), int(eps[3 * x + 1]), int(eps[3 * x + 2])))
        return TensorResult(
            qp_offset=int(job.qp_offset) if job.has_qp else None,
            levels=levels,
            hist_dep_sig_prob_enabled_flag=job.hdsp_flag,
            row_skip_enabled_flag=job.rowskip_flag,
            row_skip_list=skip if job.rowskip_flag else None,
            entry_points=ep_list)

    cdef int _decode_rows_parallel(self, TensorJob* job, cnp.ndarray levels, int jobs,
                                   object entry_points) except -1:
        """Steps 6.-7. split at entry points between threads (after the prelude); falls back to
        the sequential decode when a thread's end does not reproduce the next start."""
        global _parallel_fallbacks
        cdef CabacEngine saved = self.eng
        cdef int64_t n_brows = job.n_brows, m, P, br
        cdef int status
        cdef _RowChunk chunk, prev
        cdef const uint8_t* data = <const uint8_t*>PyBytes_AS_STRING(self.buf)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.buf)
        eps = [tuple(int(v) for v in ep) for ep in entry_points]
        n_chunks = min(jobs, n_brows)
        # entries a sequential decode would reject (the header is checked against it afterwards):
        # never converted to C integers, the tensor is decoded sequentially instead
        ok = len(eps) == n_brows - 1 and all(len(ep) == 3 and 0 <= ep[0] <= 8 * size + 64
                                              and 0 <= ep[1] < 256 and 0 <= ep[2] <= 7 for ep in eps)
        chunks = []
        if ok:
            bounds = [n_brows * x // n_chunks for x in range(n_chunks + 1)]
            starts = [job.P0]                       # absolute P of each block row start
            for x in range(n_brows - 1):
                starts.append(starts[x] + int(eps[x][0]))
            for x in range(n_chunks):
                chunk = _RowChunk.__new__(_RowChunk)
                chunk.setup(self.ctx, num_contexts(job.N), job, bounds[x], bounds[x + 1])
                if x == 0:
                    # block row 0 as in the sequential path: the range reset before it (CABAC §3.6)
                    chunk.eng = self.eng
                    cabac_reset_range(&chunk.eng)
                    chunk.entered = True
                    chunk.P_prev = job.P0
                    if chunk.eng.V >= (256 << 7):
                        ok = False
                        break
                else:
                    br = bounds[x]
                    if starts[br] > 8 * size + 64:   # past the end (and maybe beyond int64)
                        ok = False
                        break
                    chunk.entered = True
                    chunk.s = eps[br - 1][2]
                    chunk.P_prev = starts[br]
                    if not _engine_at(&chunk.eng, data, size, starts[br], eps[br - 1][1]):
                        ok = False
                        break
                chunks.append(chunk)
        if ok:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="nnr-rows") as pool:
                list(pool.map(_RowChunk.run, chunks))
            for x in range(len(chunks)):
                chunk = chunks[x]
                if chunk.status != ST_OK:
                    ok = False
                    break
                if x > 0:
                    # the previous thread measured the entry point of this thread's first row
                    br = chunk.br_begin - 1
                    want = eps[br]
                    if (job.ep[3 * br] != want[0] or job.ep[3 * br + 1] != want[1]
                            or job.ep[3 * br + 2] != want[2]):
                        ok = False
                        break
        if ok:
            self.eng = (<_RowChunk>chunks[len(chunks) - 1]).eng
            return ST_OK
        # Sequential decode from the end of the prelude: its result and its errors are the answer.
        _parallel_fallbacks += 1
        memset(cnp.PyArray_DATA(levels), 0, <size_t>(job.rows * job.W) * sizeof(int32_t))
        self.eng = saved
        job.phase = PH_LEVELS
        with nogil:
            status = decode_levels_from_start(&self.eng, self.ctx, job)
        return status

    def finish(self):
        """Terminating bin and end-of-payload checks (CABAC §3.5)."""
        cdef int bin_ = cabac_decode_terminate(&self.eng)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.buf)
        cdef int64_t nread = cabac_bytes_read(&self.eng)
        cdef int pos, last, rest
        self._check_start()
        if self.eng.overread:                # the root cause of whatever follows
            raise EntropyDecodingError(f"decoder read {self.eng.overread} byte(s) past the "
                                       "end of the payload", element="payload length",
                                       bit_offset=self._bit_offset(), value=size)
        if not bin_:
            raise EntropyDecodingError("terminating bin is 0", element="terminating bin",
                                       bit_offset=self._bit_offset())
        if nread != size:
            raise EntropyDecodingError(f"payload has {size - nread} byte(s) after the end of "
                                       "the arithmetic codeword", element="payload length",
                                       bit_offset=self._bit_offset(), value=size,
                                       allowed=nread)
        pos = 8 + self.eng.B                 # first unconsumed bit of the last byte (from MSB)
        last = self.buf[size - 1]
        rest = last & (0xFF >> pos)
        if rest != (0x80 >> pos):
            raise EntropyDecodingError("stop bit pattern is not 1 followed by zeros",
                                       element="stop bit", bit_offset=self._bit_offset(),
                                       value=f"{last:08b}", allowed=f"bit {pos} = 1, then 0s")


cdef class _RowChunk:
    """Block rows br_begin .. br_end - 1 of one tensor, decoded by one thread from an entry point
    with its own copy of the context memory."""

    cdef CabacEngine eng
    cdef CabacCtx* ctx
    cdef TensorJob* job
    cdef int64_t br_begin, br_end, P_prev
    cdef int s, status
    cdef bint entered

    def __dealloc__(self):
        free(self.ctx)

    cdef setup(self, const CabacCtx* ctx, int nctx, TensorJob* job, int64_t br_begin, int64_t br_end):
        self.ctx = <CabacCtx*>malloc(nctx * sizeof(CabacCtx))
        if self.ctx == NULL:
            raise ResourceLimitError("out of memory for a thread's context copy")
        memcpy(self.ctx, ctx, nctx * sizeof(CabacCtx))
        self.job = job
        self.br_begin = br_begin
        self.br_end = br_end
        self.s = 0
        self.status = ST_OK

    def run(self):
        with nogil:
            self.status = decode_rows_any(&self.eng, self.ctx, self.job, self.br_begin,
                                           self.br_end, self.entered, &self.s, self.P_prev)


# Tensors below this size are decoded by one thread (thread start-up costs more than it saves).
_PARALLEL_MIN_ELEMENTS = 1 << 16
# How often a parallel decode had to be redone sequentially (tests check it stays 0 on valid input).
cdef int64_t _parallel_fallbacks = 0


def parallel_fallbacks():
    """Block-row parallel decodes that were redone sequentially in this process."""
    return _parallel_fallbacks


def _bad_reset(bit_offset):
    return EntropyDecodingError("arithmetic value outside the range after a range reset",
                                element="arithmetic codeword", bit_offset=bit_offset)


def decode_payload(payload, tensors, variant=2, jobs=1, entry_points=None):
    """Decode every tensor of one NDU payload, then the terminating bin and end checks.
    jobs > 1 and the header's entry points (one tensor only): block rows decoded in parallel."""
    d = CabacDecoder(payload)
    tensors = list(tensors)
    if len(tensors) != 1:
        entry_points = None
    results = [d.decode_tensor(t, variant, jobs, entry_points) for t in tensors]
    d.finish()
    return results
