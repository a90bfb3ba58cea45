"""Cross-bitstream state for incremental coding: PUT depths, TCA references, HDSP history
(HLS §12.3, HLS §13.2–13.4; CABAC §10.1, CABAC §10.2)."""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from nnr_core.errors import ConstraintViolationError


@dataclass
class TensorHistory:
    """What the application keeps per tensor name between bitstreams."""

    levels: np.ndarray                 # entropy-decoder output of the last update (TCA reference)
    depth: int                         # decodes seen so far (REF-QUIRK: counted, not copied)
    parameter_id: Optional[int]
    nonzero: Optional[np.ndarray]      # HDSP history: OR over updates of (level != 0)
    shape: Optional[tuple] = None      # output shape and dtype, for reporting omitted updates
    dtype: Optional[np.dtype] = None


@dataclass
class IncrementalState:
    """Per-tensor parameter-update-tree state shared by a sequence of bitstreams."""

    device_id: Optional[int] = None
    tensors: dict = field(default_factory=dict)

    def tca_reference(self, name, shape, fields, unit_index) -> np.ndarray:
        """The reference levels for a TCA-coded tensor, after NNCodec's consistency checks (HLS §13.3)."""
        hist = self.tensors.get(name)
        if hist is None:
            raise ConstraintViolationError(
                f"temporal_context_modeling_flag is 1 but no earlier update of tensor {name!r} was decoded",
                unit_index=unit_index, element="temporal_context_modeling_flag", value=1)
        if hist.levels.size != int(np.prod(shape)):
            raise ConstraintViolationError(
                f"TCA reference of tensor {name!r} has {hist.levels.size} elements, the tensor {int(np.prod(shape))}",
                unit_index=unit_index, element="tensor_dimensions")
        if fields.get("node_id_present_flag") or fields.get("parent_node_id_type") == 0:
            if self.device_id is not None and fields.get("device_id", 0) != self.device_id:
                raise ConstraintViolationError("device_id differs from the parent's", unit_index=unit_index,
                                               element="device_id", value=fields.get("device_id"),
                                               allowed=self.device_id)
            if hist.parameter_id is not None and fields.get("parameter_id") is not None \
                    and fields["parameter_id"] != hist.parameter_id:
                raise ConstraintViolationError("parameter_id differs from the parent's", unit_index=unit_index,
                                               element="parameter_id", value=fields["parameter_id"],
                                               allowed=hist.parameter_id)
            depth = fields.get("put_node_depth")
            if depth is not None and depth - 1 != hist.depth:
                raise ConstraintViolationError("put_node_depth is not the parent's depth + 1",
                                               unit_index=unit_index, element="put_node_depth",
                                               value=depth, allowed=hist.depth + 1)
        return hist.levels.reshape(-1)

    def hdsp_history(self, name, num_elements) -> Optional[np.ndarray]:
        """The HDSP mask of a tensor, or None if it has none of that size yet."""
        hist = self.tensors.get(name)
        if hist is None or hist.nonzero is None or hist.nonzero.size != num_elements:
            return None
        return hist.nonzero.reshape(-1)

    def record(self, name, levels: np.ndarray, fields, parent_signalling: bool, shape=None, dtype=None) -> None:
        """Store a decoded tensor's levels as the next TCA reference; extend its HDSP history when
        the bitstream has parent signalling (NNCodec's decoder rule, HLS §13.4)."""
        if not self.device_id and fields.get("node_id_present_flag"):   # REF-QUIRK: 0 counts as unset
            self.device_id = fields.get("device_id", 0)
        levels = levels.reshape(-1).copy()
        hist = self.tensors.get(name)
        if hist is None or hist.levels.size != levels.size:
            hist = self.tensors[name] = TensorHistory(levels, 0, fields.get("parameter_id"), None)
        hist.levels = levels
        hist.depth += 1
        if shape is not None:
            hist.shape, hist.dtype = tuple(shape), np.dtype(dtype)
        if parent_signalling:
            nonzero = (levels != 0).astype(np.uint8)
            hist.nonzero = nonzero if hist.nonzero is None else hist.nonzero | nonzero
