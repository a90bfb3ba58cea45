"""Tensors carried by one NDU: names, components, shapes, payload order (HLS §9.3, HLS §9.4)."""
from dataclasses import dataclass
from typing import Optional

from nnr_core.errors import ConstraintViolationError, UnsupportedFeatureError
from nnr_core.syntax.constants import NNR_CPT_BI, NNR_CPT_BN, NNR_CPT_DC, NNR_CPT_LS, NNR_PT_BLOCK


@dataclass
class Component:
    """One tensor of an NDU: its name, role in a block and coded 2-D geometry."""

    name: str
    role: str                         # "W", "G", "H", "LS", "BI", "BN_beta", ... or "T" (plain tensor)
    shape: tuple                      # output shape
    codebook: Optional[dict] = None   # codebook() fields applying to this tensor
    carries_entry_points: bool = False

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def row_width(self) -> int:
        width = 1
        for d in self.shape[1:]:
            width *= d
        return width

    @property
    def num_elements(self) -> int:
        return self.rows * self.row_width


def _num_elements(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def _dc_shapes(fields, unit_index):
    dims = fields["tensor_dimensions"]
    rank = fields.get("decomposition_rank")
    g_rows = fields.get("g_number_of_rows")
    if not rank or not g_rows:
        raise ConstraintViolationError("decomposition needs decomposition_rank and g_number_of_rows > 0",
                                       unit_index=unit_index, element="decomposition_rank",
                                       value=(rank, g_rows))
    # NNCodec divides in floating point then truncates; integer division is the same for these sizes
    h_cols = _num_elements(dims) // g_rows
    if h_cols == 0:
        raise ConstraintViolationError("decomposed H would be empty", unit_index=unit_index,
                                       element="g_number_of_rows", value=g_rows)
    return (g_rows, rank), (rank, h_cols)


def ndu_components(fields, unit_index, pending_h: bool) -> list:
    """The components of an NDU in payload order (HLS §9.3), with shapes and codebooks."""
    pt = fields["nnr_compressed_data_unit_payload_type"]
    cpt = fields.get("compressed_parameter_types", 0)
    dims = tuple(fields["tensor_dimensions"])
    codebook = fields.get("codebook") if fields.get("codebook_present_flag") else None
    if pt != NNR_PT_BLOCK:
        if fields.get("nnr_multiple_topology_elements_present_flag"):
            raise UnsupportedFeatureError(
                "several topology elements outside NNR_PT_BLOCK need topology_tensor_dimension_mapping(), "
                "which has no public syntax", unit_index=unit_index,
                element="nnr_multiple_topology_elements_present_flag", value=1)
        name = fields["topology_elem_id"]
        if cpt & NNR_CPT_DC:
            g_shape, h_shape = _dc_shapes(fields, unit_index)
            if pending_h:
                return [Component(name, "H", h_shape, codebook, True)]
            return [Component(name, "G", g_shape, codebook, True)]
        return [Component(name, "T", dims, codebook, True)]

    if not fields.get("nnr_multiple_topology_elements_present_flag"):
        raise ConstraintViolationError("NNR_PT_BLOCK needs nnr_multiple_topology_elements_present_flag = 1",
                                       unit_index=unit_index,
                                       element="nnr_multiple_topology_elements_present_flag", value=0)
    names = list(fields["topology_elem_id_list"])
    expected = (2 if cpt & NNR_CPT_DC else 1) + (1 if cpt & NNR_CPT_LS else 0) \
        + (4 if cpt & NNR_CPT_BN else 0) + (1 if cpt & NNR_CPT_BI else 0)
    if len(names) != expected:
        raise ConstraintViolationError("number of topology elements does not match compressed_parameter_types",
                                       unit_index=unit_index, element="count_topology_elements_minus2",
                                       value=len(names), allowed=expected)
    rows = dims[0]
    by_role = {}
    it = iter(names)
    if cpt & NNR_CPT_DC:
        by_role["G"], by_role["H"] = next(it), next(it)
    else:
        by_role["W"] = next(it)
    if cpt & NNR_CPT_LS:
        by_role["LS"] = next(it)
    if cpt & NNR_CPT_BN:
        for role in ("BN_beta", "BN_gamma", "BN_mean", "BN_var"):
            by_role[role] = next(it)
    if cpt & NNR_CPT_BI:
        by_role["BI"] = next(it)

    comps = []
    for role in ("LS", "BI", "BN_beta", "BN_gamma", "BN_mean", "BN_var"):
        if role in by_role:
            comps.append(Component(by_role[role], role, (rows,)))
    if cpt & NNR_CPT_DC:
        g_shape, h_shape = _dc_shapes(fields, unit_index)
        codebook2 = fields.get("codebook2") if fields.get("codebook_present_flag") else None
        comps.append(Component(by_role["G"], "G", g_shape, codebook, True))
        comps.append(Component(by_role["H"], "H", h_shape, codebook2, True))
    else:
        comps.append(Component(by_role["W"], "W", dims, codebook, True))
    return comps
