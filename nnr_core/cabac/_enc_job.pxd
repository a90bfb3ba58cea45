# cython: language_level=3
"""One tensor as the encoder's nogil procedure sees it (CABAC §12 procedure B, mirrored), shared by
the per-tensor procedure (``_encoder.pyx``), the parameter-set pass (``_enc_pseudo.pyx``) and the
level loops (``_enc_levels.pyx``); filled from ``pytwin_enc.prepare``'s checked record."""
from libc.stdint cimport uint8_t, int32_t, int64_t


cdef enum:
    ST_OK = 0
    ST_NOMEM = 1


ctypedef struct EncJob:
    int64_t rows
    int64_t W
    int N
    int dq
    int eff_scan
    int64_t n_brows
    int variant
    int edition2_flags
    int parent
    int hdsp_flag
    int rowskip_flag
    int qp_bits
    int64_t qp_offset
    int no_bins
    int param_opt
    int tca_on
    int64_t cbsize
    int64_t cbzero
    const int32_t* levels
    const int32_t* tca
    const uint8_t* hist
    const uint8_t* skip
    int64_t* epw            # per block row after the first: P, L, DQ state after its range reset
    int64_t P0              # bit position where block row 0 starts
    int64_t rounded         # wrong-parity DQ indices (rounded to a level, REF-QUIRK of CABAC §8.2)
