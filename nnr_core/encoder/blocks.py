"""Blocks: the tensors of one layer coded together (NNR_PT_BLOCK, HLS §8, HLS §9.3, HLS §14 items 6
and 9), as the reference groups them from its option ``block_id_and_param_type``.

The option (the reference's format, NNCodec 2.1.3 ``nnc.compress``)::

    {"block_identifier": {name: block_id or None, ...},
     "parameter_type":   {name: "weight" | "weight.ls" | "bias" | "bn.beta" | "bn.gamma"
                                | "bn.mean" | "bn.var" | "unspecified", ...}}

Tensors sharing a block id (not None) form a block when there are at least two of them; a lone
member is an ordinary tensor. Every listed parameter type also decides the tensor's QP class: only
"weight" is coded with ``qp``, every other type with ``nonweight_qp``.

A block is written at the position of its weight. It is one NNR_PT_BLOCK unit unless its members
cannot share one (an integer member, a codebook on a non-weight member, or different dq flags);
then each member gets its own unit, in payload order LS, BI, BN beta/gamma/mean/var, W, each
carrying the block's compressed_parameter_types. With parent signalling (incremental coding) the
units of a block leave tensor_dimensions out (tensor_dimensions_flag 0, HLS §11): the
decoder needs the dimensions out of band.

Not supported (rejected): low-rank decomposition (NNR_CPT_DC, ``<weight>_G``/``<weight>_H``
tensors), and option contents the reference would accept but then code wrongly (members it drops,
tensors it codes twice); see ``resolve_blocks``.
"""
from dataclasses import dataclass, field

import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core.syntax.constants import NNR_CPT_BI, NNR_CPT_BN, NNR_CPT_LS, NNR_PT_BLOCK, NNR_PT_INT

PARAM_TYPES = ("weight", "weight.ls", "bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var", "unspecified")
BN_TYPES = ("bn.beta", "bn.gamma", "bn.mean", "bn.var")
PAYLOAD_ORDER = ("weight.ls", "bias") + BN_TYPES + ("weight",)     # HLS §9.3, payload order
NAME_ORDER = ("weight", "weight.ls") + BN_TYPES + ("bias",)         # HLS §9.3, topology_elem_id_list


@dataclass
class Block:
    """One block: its members by parameter type."""

    block_id: object
    members: dict = field(default_factory=dict)     # parameter type -> tensor name

    @property
    def weight(self) -> str:
        return self.members["weight"]

    @property
    def cpt(self) -> int:
        return ((NNR_CPT_LS if "weight.ls" in self.members else 0) | (NNR_CPT_BN if "bn.gamma" in self.members else 0)
                | (NNR_CPT_BI if "bias" in self.members else 0))

    def payload_order(self) -> list:
        return [self.members[t] for t in PAYLOAD_ORDER if t in self.members]

    def name_order(self) -> list:
        return [self.members[t] for t in NAME_ORDER if t in self.members]


def check_option(option) -> None:
    """The option's structure (before the tensors are known)."""
    if not isinstance(option, dict):
        raise EncoderConfigError("block_id_and_param_type must be a dict {'block_identifier': {name: id or None}, "
                                 f"'parameter_type': {{name: type}}}}, not {type(option).__name__}")
    extra = set(option) - {"block_identifier", "parameter_type"}
    if extra:
        raise EncoderConfigError(f"block_id_and_param_type: unknown key(s) {sorted(map(str, extra))}; "
                                 "expected 'block_identifier' and 'parameter_type'")
    for key in ("block_identifier", "parameter_type"):
        if key not in option:
            raise EncoderConfigError(f"block_id_and_param_type needs the key {key!r}")
        if not isinstance(option[key], dict):
            raise EncoderConfigError(f"block_id_and_param_type[{key!r}] must be a dict keyed by tensor name")
    for name, ptype in option["parameter_type"].items():
        if ptype not in PARAM_TYPES:
            raise EncoderConfigError(f"block_id_and_param_type: tensor {name!r} has parameter type {ptype!r}; "
                                     f"the types are {', '.join(PARAM_TYPES)}")
    for name, bid in option["block_identifier"].items():
        try:
            hash(bid)
        except TypeError:
            raise EncoderConfigError(f"block_id_and_param_type: block id of {name!r} must be hashable "
                                     f"(a string or a number), not {type(bid).__name__}") from None


def _known(name, names):
    return name in names or ".num_batches_tracked" in name      # the pytorch framework drops those


def resolve_blocks(option, inputs, raw_float=()) -> dict:
    """The blocks of the model, keyed by their weight's name, after the reference's sanity check
    (``sanity_check_block_id_and_param_type``) and the checks for what the reference codes wrongly."""
    if not option:
        return {}
    check_option(option)
    by_name = {t.name: t for t in inputs}
    ids, types = option["block_identifier"], option["parameter_type"]
    for name in list(ids) + list(types):
        if not _known(name, by_name):
            raise EncoderConfigError(f"block_id_and_param_type names {name!r}, which is not a tensor of the model")

    # the reference's sanity check: every blocked tensor has a type, non-weights are 1-D, types are
    # not repeated within a block, all members have the same first dimension, each block has a weight
    groups = {}
    for name, bid in ids.items():
        if bid is None or name not in by_name:
            continue
        if name not in types:
            raise EncoderConfigError(f"block_id_and_param_type: tensor {name!r} is in block {bid!r} "
                                     "but has no parameter_type")
        shape = by_name[name].data.shape
        if types[name] != "weight" and len(shape) != 1:
            raise EncoderConfigError(f"block {bid!r}: member {name!r} of type {types[name]!r} has shape "
                                     f"{tuple(shape)}; only the weight of a block may have more than one dimension")
        groups.setdefault(bid, []).append(name)
    blocks = {}
    for bid, names in groups.items():
        seen = {}
        first = by_name[names[0]].data.shape[0]
        for name in names:
            ptype = types[name]
            if ptype != "unspecified" and ptype in seen:
                raise EncoderConfigError(f"block {bid!r} has two tensors of type {ptype!r}: "
                                         f"{seen[ptype]!r} and {name!r}")
            seen.setdefault(ptype, name)
            if by_name[name].data.shape[0] != first:
                raise EncoderConfigError(f"block {bid!r}: member {name!r} has {by_name[name].data.shape[0]} rows "
                                         f"(first dimension), {names[0]!r} has {first}; a block's members "
                                         "share the first dimension")
        if "weight" not in seen:
            raise EncoderConfigError(f"block {bid!r} ({', '.join(map(repr, names))}) has no tensor of type 'weight'")
        if len(names) < 2:
            continue              # the reference treats a lone member as an ordinary tensor
        blocks[bid] = _checked_block(bid, names, types, by_name, raw_float)
    return {b.weight: b for b in blocks.values()}


def _checked_block(bid, names, types, by_name, raw_float) -> Block:
    """Reject what the reference accepts but does not code as given: it finds a block's LS and bias
    by name (<weight>_scaling, <weight>.bias) and its BN part by the gamma."""
    block = Block(bid, {types[n]: n for n in names})
    w = block.weight
    if "unspecified" in block.members:
        raise EncoderConfigError(f"block {bid!r}: member {block.members['unspecified']!r} has type 'unspecified'; "
                                 "a block carries only weight, weight.ls, bias and bn.* tensors (the reference "
                                 "would drop it from the bitstream)")
    ls = block.members.get("weight.ls")
    if ls is not None and ls != w + "_scaling":
        raise EncoderConfigError(f"block {bid!r}: the local-scaling vector must be named {w + '_scaling'!r} "
                                 f"(the reference finds it by that name), not {ls!r}")
    if ls is None and w + "_scaling" in by_name:
        raise EncoderConfigError(f"block {bid!r}: tensor {w + '_scaling'!r} would be taken as the block's "
                                 "local-scaling vector; give it block id "
                                 f"{bid!r} and type 'weight.ls', or rename it")
    if "bias" not in block.members and w + ".bias" in by_name:
        raise EncoderConfigError(f"block {bid!r}: tensor {w + '.bias'!r} would be taken as the block's bias "
                                 f"(the reference looks for '<weight>.bias'); give it block id {bid!r} and "
                                 "type 'bias', or rename it")
    bn = [t for t in BN_TYPES if t in block.members]
    if bn and len(bn) != 4:
        raise EncoderConfigError(f"block {bid!r} has batch-norm members {bn}; a block carries all four "
                                 "(bn.beta, bn.gamma, bn.mean, bn.var) or none")
    for suffix in ("_G", "_H"):
        if w + suffix in by_name:
            raise EncoderConfigError(f"block {bid!r}: tensor {w + suffix!r} would make the block a low-rank "
                                     "decomposition (NNR_CPT_DC), which this encoder does not write")
    for name in names:
        if name in raw_float:
            raise EncoderConfigError(f"block {bid!r}: member {name!r} cannot be NNR_PT_RAW_FLOAT")
    return block


def block_possible(block: Block, planned: dict) -> bool:
    """The reference's is_block_possible: one unit unless a member is an integer tensor, a non-weight
    member is codebook-quantized, or the members' dq flags differ."""
    members = [planned[n] for n in block.payload_order()]
    if any(p.payload_type == NNR_PT_INT for p in members):
        return False
    if any(p.codebook is not None for t, n in block.members.items() if t != "weight" for p in [planned[n]]):
        return False
    return len({p.dq_flag for p in members}) == 1


def block_units(ndu, block: Block, planned: dict, base_qp: int, oob_dims: bool) -> list:
    """The units of a block: [(UnitParts, or None when omitted, [Planned members])]."""
    cpt = block.cpt
    if not block_possible(block, planned):
        return [(ndu.unit_parts(planned[n], base_qp, cpt, oob_dims), [planned[n]]) for n in block.payload_order()]
    members = [planned[n] for n in block.payload_order()]
    if ndu.omit_zeros and not any(np.any(p.levels) for p in members):
        return [(None, members)]       # an update of all zeros is omitted (HLS §13.5)
    fields = ndu.header_fields(planned[block.weight], cpt, oob_dims)
    if fields.get("temporal_context_modeling_flag"):
        # the reference looks at the weight only (and crashes when another member has no usable
        # reference); nnr uses TCA only when every member has one
        pid = fields["parameter_id"]
        if not all(ndu.has_reference(p.tensor.name, pid) for p in members):
            fields["temporal_context_modeling_flag"] = 0
    del fields["topology_elem_id"]
    names = block.name_order()
    fields.update(nnr_compressed_data_unit_payload_type=NNR_PT_BLOCK,
                  nnr_multiple_topology_elements_present_flag=1,
                  count_topology_elements_minus2=len(names) - 2, topology_elem_id_list=names)
    return [(ndu.coded_unit(members, fields, base_qp), members)]
