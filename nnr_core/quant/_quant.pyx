# distutils: extra_compile_args = -O3 -ffp-contract=off
"""Encoder quantization kernels: uniform (CABAC §9.3) and trellis-coded (CABAC §8.3) quantization.

CABAC §8.3, CABAC §9.3, CABAC §7.1-7.2 (scan order). Every loop runs without the GIL over typed
memoryviews; the Python front (quantize.py) checks the arguments and owns the error reporting.
The floating-point steps follow NNCodec 2.1.3's Quant.cpp operation by operation (float32 where it
uses float32, double where it uses double); -ffp-contract=off keeps the compiler from fusing them.
The plain trellis (_tcq.pxd) runs the fastest kernel the CPU has: AVX-512, AVX2 or scalar, all with
the same levels; NNR_TCQ_KERNEL=scalar|avx2|avx512 in the environment or set_tcq_kernel picks one.
"""
from libc.math cimport round
from libc.stdint cimport int32_t, int64_t, uint8_t

from nnr_core.cabac._engine cimport scan_block
from nnr_core.quant._tcq cimport (NNR_TCQ_AVX2, NNR_TCQ_AVX512, NNR_TCQ_CLS, NNR_TCQ_PREV,
                                   NNR_TCQ_SCALAR, nnr_tcq_init, nnr_tcq_plain, nnr_tcq_supported)
from nnr_core.quant._trellis cimport NNR_URQ_MAX, NNR_URQ_MIN, importance_ptr, trellis_branches

import os

import numpy as np

# CABAC §8.3 step 3 branch order into every state c (class 4 = the zero candidate)
cdef int32_t BRANCH_PREV[8][3]
cdef int32_t BRANCH_CLASS[8][3]
trellis_branches(BRANCH_PREV, BRANCH_CLASS)


cdef void _fill_scan(int64_t* out, int64_t rows, int64_t row_width, int64_t bd) noexcept nogil:
    """Row-major positions in coding scan order: block rows, blocks, rows, columns (CABAC §7.2)."""
    cdef int64_t n = 0, r0, c0, r, c, r1, c1
    r0 = 0
    while r0 < rows:
        r1 = r0 + bd if r0 + bd < rows else rows
        c0 = 0
        while c0 < row_width:
            c1 = c0 + bd if c0 + bd < row_width else row_width
            for r in range(r0, r1):
                for c in range(c0, c1):
                    out[n] = r * row_width + c
                    n += 1
            c0 += bd
        r0 += bd


def scan_positions(int64_t rows, int64_t row_width, int scan_order):
    """Row-major index of every scan position of a [rows, row_width] matrix (CABAC §7.1-7.2)."""
    cdef int64_t n = rows * row_width
    pos = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] out = pos
    cdef int64_t bh, bw
    if n == 0:
        return pos
    if scan_order == 0:
        with nogil:
            _fill_scan(&out[0], 1, n, n)
    else:
        scan_block(rows, row_width, scan_order, &bh, &bw)
        with nogil:
            _fill_scan(&out[0], rows, row_width, bh)
    return pos


def uniform_plain(const float[::1] w, int32_t[::1] out, float qstep):
    """CABAC §9.3 without rate term: round(fl32(fl32(1/Delta) * w)); False on int32 overflow."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef float scale = <float>1.0 / qstep
    cdef float prod
    cdef double scaled
    cdef bint ok = True
    with nogil:
        for i in range(n):
            prod = scale * w[i]
            scaled = round(<double>prod)
            if scaled > NNR_URQ_MAX or scaled < NNR_URQ_MIN:
                ok = False
                break
            out[i] = <int32_t>scaled
    return ok


def branch_table():
    """The CABAC §8.3 branch order as built from NEXT: [(prev, class) x 3] per state (for tests)."""
    return [[(BRANCH_PREV[c][b], BRANCH_CLASS[c][b]) for b in range(3)] for c in range(8)]


def kernel_branch_table():
    """The branch order the tcq_plain kernels hard-code, in branch_table()'s form (for tests)."""
    return [[(NNR_TCQ_PREV[b][c], NNR_TCQ_CLS[b][c]) for b in range(3)] for c in range(8)]


# tcq_plain kernels, slowest first
_KERNELS = {"scalar": NNR_TCQ_SCALAR, "avx2": NNR_TCQ_AVX2, "avx512": NNR_TCQ_AVX512}
nnr_tcq_init()
cdef int _best_kernel = max(k for k in _KERNELS.values() if nnr_tcq_supported(k))
cdef int _kernel = _best_kernel


def tcq_kernels():
    """Names of the trellis kernels this build and CPU run, the fastest last."""
    return [name for name, k in _KERNELS.items() if nnr_tcq_supported(k)]


def set_tcq_kernel(name=None):
    """Select the trellis kernel by name (None: the fastest); returns the previous name."""
    global _kernel
    prev = tcq_kernel()
    if name is None:
        _kernel = _best_kernel
    elif name in tcq_kernels():
        _kernel = _KERNELS[name]
    else:
        raise ValueError(f"trellis kernel {name!r} not available here: {tcq_kernels()}")
    return prev


def tcq_kernel():
    """Name of the trellis kernel tcq_plain uses."""
    return next(name for name, k in _KERNELS.items() if k == _kernel)


if os.environ.get("NNR_TCQ_KERNEL"):
    set_tcq_kernel(os.environ["NNR_TCQ_KERNEL"])


def tcq_plain(const float[::1] w, const int64_t[::1] scan, int32_t[::1] out, float qstep,
              uint8_t[::1] decisions, const double[::1] importance=None):
    """CABAC §8.3 without rate term: Viterbi over the 8 DQ states along `scan`; indices i to `out`.

    `scan` is a permutation of the positions, None the identity (matrix scan). `decisions` is
    scratch of 2 bytes per position.
    `importance` (one weight per element of w, or None) multiplies every candidate's distortion;
    a weight of 1.0 leaves the search bit for bit unchanged. Returns False on the int32 overflow
    of the guard, before any search.
    """
    cdef Py_ssize_t n = w.shape[0]
    cdef const int64_t* sp = NULL
    cdef const double* imp = importance_ptr(importance, n)
    cdef int ok
    if scan is not None:
        if scan.shape[0] != n:
            raise ValueError(f"scan has {scan.shape[0]} positions, w {n} elements")
        if n:
            sp = &scan[0]
    if out.shape[0] != n or decisions.shape[0] < 2 * n:
        raise ValueError("out needs one element and decisions two bytes per element of w")
    if n == 0:
        return True
    with nogil:
        ok = nnr_tcq_plain(_kernel, &w[0], sp, imp, &out[0], n, qstep, &decisions[0])
    return bool(ok)
