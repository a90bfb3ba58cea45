# cython: language_level=3
"""The encoder's level loops (``_enc_levels.pyx``), called by the per-tensor procedure."""
from libc.stdint cimport int64_t

from nnr_core.cabac._engine cimport CabacCtx
from nnr_core.cabac._enc_engine cimport EncEngine
from nnr_core.cabac._enc_job cimport EncJob

cdef int code_levels(EncEngine* ep, CabacCtx* ctx, EncJob* j) noexcept nogil
cdef int code_one_level(EncEngine* ep, CabacCtx* ctx, Py_ssize_t nctx, int64_t k, int s, int cls,
                        int64_t b, int h, int N, int64_t cbsize, int64_t cbzero) noexcept nogil
