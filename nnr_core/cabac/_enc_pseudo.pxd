# cython: language_level=3
"""The parameter-set pass (``_enc_pseudo.pyx``), called by the per-tensor procedure."""
from nnr_core.cabac._enc_job cimport EncJob
from nnr_core.cabac._shadow cimport Shadow

cdef Shadow* shadow_new(int nctx, int N) noexcept nogil
cdef void shadow_free(Shadow* sh) noexcept nogil
cdef void pseudo_pass(Shadow* sh, const EncJob* j) noexcept nogil
