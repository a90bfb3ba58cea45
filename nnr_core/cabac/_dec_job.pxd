# cython: language_level=3
"""One tensor as the decoder's nogil procedure sees it (CABAC §12 procedure B), its status codes and
phases, shared by the per-tensor procedure (``_decoder.pyx``) and the level loops
(``_dec_levels.pyx``)."""
from libc.stdint cimport uint8_t, int32_t, int64_t


cdef enum:
    OVERREAD_BAIL = 4       # stop (before the next level or row-skip flag) past this many zero bytes
    LEVEL_MAX = 2147483647  # k and i must fit int32: magnitudes up to 2^31 - 1, or 2^31 when negative
    # A level takes at least one regular bin and a regular bin at least log2(351/349) > 1/128 bit
    # of the codeword (rLPS 2 at R = 351 is the smallest share, Appendix A.1); P + 9 <= 8 x size
    # at the end of a valid payload, P rounds down by less than a bit (CABAC §3.8), hence the slack.
    BINS_PER_BIT = 128
    CAPACITY_SLACK_BITS = 16

# Status codes of the nogil procedure.
cdef enum:
    ST_OK = 0
    ST_OVERREAD = 1
    ST_LEVEL_RANGE = 2
    ST_RECON_RANGE = 3
    ST_NO_HISTORY = 4
    ST_BAD_RESET = 5
    ST_NO_MEMORY = 6
    ST_CAPACITY = 7

# Phases, for error locations.
cdef enum:
    PH_QP = 0
    PH_FLAGS = 1
    PH_ROW_SKIP = 2
    PH_SIGNALLING = 3
    PH_LEVELS = 4


ctypedef struct TensorJob:
    # --- inputs
    int64_t rows
    int64_t W               # RowWidth
    int N                   # greater-than flags per level
    int dq
    int eff_scan            # effective scan order (0..4)
    int variant
    int edition2_flags      # step 3 of CABAC §2 present
    int parent
    int has_qp
    int qp_bits             # 6 + QpDensity
    int no_bins             # gpi 1 and CodebookSize 1
    int64_t cbsize
    int64_t cbzero
    const int32_t* tca      # TCA reference levels or NULL
    const uint8_t* hist     # HDSP history or NULL
    int32_t* out            # int32[rows*W], zero-initialised
    uint8_t* skip           # uint8[rows], zero-initialised
    int64_t* ep             # int64[(block_rows-1)*3]
    # --- set by the prelude
    int64_t P0              # bit position where block row 0 starts
    int64_t n_brows
    # --- outputs
    int64_t qp_offset
    int hdsp_flag
    int rowskip_flag
    int phase
    int64_t bad_value
