# cython: language_level=3
"""Uniform reconstruction value = fl32(Delta) * fl32(i) (CABAC §9.2) without the GIL,
so that worker threads reconstructing decoded tensors do not queue for it."""
from libc.stdint cimport int32_t
from libc.string cimport memcpy
from libc.math cimport isfinite

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef inline void _scale(const int32_t* src, float* dst, Py_ssize_t n, float delta) noexcept nogil:
    # memcpy per element: src and dst may be the same memory (int32 read, float32 written)
    cdef Py_ssize_t i
    cdef int32_t v
    cdef float f
    for i in range(n):
        memcpy(&v, &src[i], 4)
        f = <float>v * delta
        memcpy(&dst[i], &f, 4)


def reconstruct_int32(cnp.ndarray levels, float delta, bint inplace):
    """float32 values of the int32, C-contiguous `levels` (written over them when `inplace`);
    None if a value overflows float32 (the caller reports it)."""
    cdef Py_ssize_t i, n = levels.size
    cdef const int32_t* src = <const int32_t*>cnp.PyArray_DATA(levels)
    cdef int32_t lo = 0, hi = 0
    cdef float extreme
    cdef cnp.ndarray out
    with nogil:
        for i in range(n):
            if src[i] < lo:
                lo = src[i]
            elif src[i] > hi:
                hi = src[i]
        # rounding is monotonic: the largest magnitude gives the largest product
        extreme = (<float>hi if -<float>lo < <float>hi else -<float>lo) * delta
    if not isfinite(extreme):
        return None
    out = levels.view(np.float32) if inplace else np.empty_like(levels, dtype=np.float32)
    with nogil:
        _scale(src, <float*>cnp.PyArray_DATA(out), n, delta)
    return out
