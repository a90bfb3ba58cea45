"""The trellis-coded quantization kernels without rate term (CABAC §8.3): declarations of the C in
include/nnr_tcq.h (forward search, traceback, AVX-512 / AVX2 / scalar kernels)."""
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef extern from "nnr_tcq.h":
    enum:
        NNR_TCQ_SCALAR
        NNR_TCQ_AVX2
        NNR_TCQ_AVX512
    const int NNR_TCQ_PREV[3][8]
    const int NNR_TCQ_CLS[3][8]
    void nnr_tcq_init() noexcept nogil
    int nnr_tcq_supported(int kernel) noexcept nogil
    int nnr_tcq_plain(int kernel, const float* w, const int64_t* scan, const double* imp,
                      int32_t* out, Py_ssize_t n, float qstep, uint8_t* dec) noexcept nogil
