"""Hand-over record between the NDU header and the entropy decoder (CABAC §2, CABAC §12)."""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

VARIANT_NNCODEC2 = 2
"""Edition-2 behaviour (NNCodec 2.x); the only variant for general_profile_idc 1."""
VARIANT_NNCODEC1 = 1
"""Edition-1 behaviour of NNCodec 1.x: 32 signalled remainder contexts, range reset for a
single block row (CABAC §11). Valid only with general_profile_idc 0."""


@dataclass
class TensorCoding:
    """Everything the entropy decoder needs to decode one tensor of an NDU payload."""

    rows: int                           # Rows = tensor_dimensions[0]
    row_width: int                      # RowWidth = product of tensor_dimensions[1:] (1 for 1-D)
    ndim: int                           # count_tensor_dimensions
    has_qp_offset: bool                 # payload type NNR_PT_FLOAT or NNR_PT_BLOCK
    qp_density: int                     # QpDensity (0..7), width of qp_offset = 6 + qp_density
    dq_flag: int                        # 0 or 1 (the caller passes 0 for NNR_PT_INT)
    cabac_unary_length_minus1: int      # N = cabac_unary_length_minus1 + 1
    scan_order: int                     # transmitted scan_order (0..4); effective order derived inside
    general_profile_idc: int            # 0 or 1
    parent_node_id_present_flag: int = 0
    tca_reference: Optional[np.ndarray] = None   # int32[rows*row_width] iff temporal_context_modeling_flag = 1
    hdsp_history: Optional[np.ndarray] = None    # uint8[rows*row_width] history mask, if the application has one
    codebook_size: int = 0              # CodebookSize as the entropy part sees it (0 unless gpi 1 and codebook)
    cb_zero_offset: int = 0             # CbZeroOffset (0 unless gpi 1 and codebook)

    @property
    def num_elements(self) -> int:
        return self.rows * self.row_width


@dataclass
class TensorResult:
    """What the entropy decoder produced for one tensor."""

    qp_offset: Optional[int]            # None when the payload type has no qp offset
    levels: np.ndarray                  # int32[rows*row_width], row-major: DQ reconstruction indices,
                                        # plain levels, integers (NNR_PT_INT) or codebook symbols k
    hist_dep_sig_prob_enabled_flag: int = 0
    row_skip_enabled_flag: int = 0
    row_skip_list: Optional[np.ndarray] = None   # uint8[rows] when row_skip_enabled_flag = 1
    # One (BitOffsetDelta, ep_arith_value, ep_dq_state) per block row after the first, measured
    # while decoding (HLS §8.5); empty unless the effective scan has > 1 block row.
    entry_points: list = field(default_factory=list)


@dataclass
class TensorEncoding:
    """One tensor to entropy-code: the decoder's record plus the data and the encoder's choices."""

    coding: TensorCoding
    levels: np.ndarray                  # int32[rows*row_width], row-major: exactly what the decoder must
                                        # return as TensorResult.levels (DQ reconstruction indices,
                                        # plain levels, integers, or codebook symbols k)
    qp_offset: Optional[int] = None     # required iff coding.has_qp_offset
    row_skip_enabled_flag: int = 0      # used only where the flag is coded (CABAC §2 step 3b)
    hist_dep_sig_prob_enabled_flag: int = 0   # used only where the flag is coded (CABAC §2 step 3a)
    param_opt: bool = True              # choose context parameter sets as NNCodec does (CABAC §6.5)
