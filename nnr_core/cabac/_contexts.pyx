# cython: language_level=3
"""The context memory (CABAC §4.1) the Cython decoder and encoder share: allocation, the low-level
API's context calls and the state dump the twins are compared with."""
from libc.stdint cimport int64_t
from libc.stdlib cimport realloc, free

import operator

import numpy as np
cimport numpy as cnp

from nnr_core.cabac._engine cimport CabacCtx, ctx_set, ctx_init_all, ctx_reset_all, num_contexts

cnp.import_array()


cdef class ContextMemory:
    """Base of CabacDecoder / CabacEncoder: a growable array of contexts."""

    def __cinit__(self, *args, **kwargs):
        self.ctx = NULL
        self.nctx = 0
        self.cap = 0

    def __dealloc__(self):
        free(self.ctx)

    cdef _alloc(self, Py_ssize_t count):
        """Hold `count` contexts (contents undefined until initialised)."""
        cdef CabacCtx* p
        if count > self.cap:
            p = <CabacCtx*>realloc(self.ctx, count * sizeof(CabacCtx))
            if p == NULL:
                raise MemoryError()
            self.ctx = p
            self.cap = count
        self.nctx = count

    cdef Py_ssize_t _check_ctx(self, ctx) except -1:
        c = operator.index(ctx)
        if c < 0 or c >= self.nctx:
            raise IndexError(f"context {c} outside the context memory (0..{self.nctx - 1})")
        return c

    cdef int _check_param_set(self, k) except -1:
        """Raise the subclass's error for a parameter set outside 0..8."""
        raise NotImplementedError

    cdef int _check_level_args(self, int s, int N, int64_t b) except -1:
        """The one-level calls' DQ state, N and TCA reference b, and room for N's contexts."""
        if s < 0 or s > 7:
            raise ValueError("dq_state must be 0..7")
        if N < 1 or N > 256:
            raise ValueError("N must be 1..256")
        if self.nctx < num_contexts(N):
            raise ValueError(f"context memory holds {self.nctx} contexts, needs {num_contexts(N)}")
        if b < -2147483648 or b > 2147483647:
            raise ValueError("b must fit int32")
        return 0

    def init_contexts(self, count):
        """`count` contexts, all with parameter set 0 (CABAC §4.2)."""
        count = operator.index(count)
        if count < 0 or count > 1 << 20:
            raise ValueError("context count out of range")
        self._alloc(count)
        ctx_init_all(self.ctx, count)

    def set_context_param_set(self, ctx, k):
        """(Re)initialise context `ctx` with parameter set k (CABAC §4.2)."""
        cdef Py_ssize_t c = self._check_ctx(ctx)
        k = operator.index(k)
        if k < 0 or k > 8:
            self._check_param_set(k)
        ctx_set(&self.ctx[c], k)

    def reset_contexts(self):
        """Block-row reset (CABAC §6.3) of every context."""
        ctx_reset_all(self.ctx, self.nctx)

    def contexts(self):
        """int32[nctx, 5]: S0, S1, sh0, sh1, parameter set of each context."""
        cdef cnp.ndarray[cnp.int32_t, ndim=2] a = np.empty((self.nctx, 5), dtype=np.int32)
        cdef Py_ssize_t i
        for i in range(self.nctx):
            a[i, 0] = self.ctx[i].S0
            a[i, 1] = self.ctx[i].S - 16 * self.ctx[i].S0
            a[i, 2] = self.ctx[i].sh0
            a[i, 3] = self.ctx[i].sh1
            a[i, 4] = self.ctx[i].k
        return a
