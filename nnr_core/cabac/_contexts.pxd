# cython: language_level=3
from libc.stdint cimport int64_t

from nnr_core.cabac._engine cimport CabacCtx


cdef class ContextMemory:
    cdef CabacCtx* ctx
    cdef Py_ssize_t nctx
    cdef Py_ssize_t cap
    cdef _alloc(self, Py_ssize_t count)
    cdef Py_ssize_t _check_ctx(self, ctx) except -1
    cdef int _check_param_set(self, k) except -1
    cdef int _check_level_args(self, int s, int N, int64_t b) except -1
