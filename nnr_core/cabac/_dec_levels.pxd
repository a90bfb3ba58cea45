# cython: language_level=3
"""The decoder's level loops (``_dec_levels.pyx``), called by the per-tensor procedure."""
from libc.stdint cimport int64_t

from nnr_core.cabac._engine cimport CabacEngine, CabacCtx
from nnr_core.cabac._dec_job cimport TensorJob

cdef int decode_rows_any(CabacEngine* ep, CabacCtx* ctx, TensorJob* j, int64_t br_begin,
                         int64_t br_end, bint entered, int* s_io, int64_t P_prev) noexcept nogil
cdef int decode_levels_from_start(CabacEngine* ep, CabacCtx* ctx, TensorJob* j) noexcept nogil
cdef int64_t decode_one_level(CabacEngine* e, CabacCtx* ctx, int s, int cls, int64_t b, int h,
                              int N, int64_t cbsize, int64_t cbzero) noexcept nogil
