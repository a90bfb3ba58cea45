"""Batch-norm folding (BNF) and its inverse: the block's batch-norm vectors (NNR_CPT_BN) turned into
a local-scaling vector (NNR_CPT_LS) and a bias (NNR_CPT_BI) before quantization, as NNCodec 2.1.3's
``fold_bn`` does (HLS §9.5); at the decoder, ``unfold_bn`` (batch norms back as identities around
the carried bias) and ``apply_lsa`` (LS multiplied into the weight rows), as its ``decompress``
does with ``reconstruct_bnf`` / ``reconstruct_lsa``.

Folding (per block with all four bn.* members), eps = 1e-5 (the reference's value for every model
but TensorFlow's):

    g    = gamma / sqrt(var + eps)
    LS   = LS · g                 (LS = 1 where the block had none; named <weight>_scaling)
    BI   = (BI − mean) · g + beta (BI = 0 where the block had none; named <weight>.bias)

all in float32, in that order, so the folded vectors are the reference's bit for bit. The four BN
tensors leave the model; the bias and LS join the block with types "bias" and "weight.ls".
"""
import numpy as np

from nnr_core.encoder.blocks import BN_TYPES, check_option
from nnr_core.encoder.prepare import _to_numpy
from nnr_core.errors import EncoderConfigError

BNF_EPS = 1e-5


def _blocks_with_bn(option, names):
    """{block id: {type: name}} of the option's blocks that carry all four bn.* members."""
    groups = {}
    for name, bid in option["block_identifier"].items():
        if bid is not None and name in names and name in option["parameter_type"]:
            groups.setdefault(bid, {})[option["parameter_type"][name]] = name
    out = {}
    for bid, members in groups.items():
        present = [t for t in BN_TYPES if t in members]
        if not present:
            continue
        if len(present) != 4:
            raise EncoderConfigError(f"bnf: block {bid!r} has batch-norm members {present}; folding needs all "
                                     "four (bn.beta, bn.gamma, bn.mean, bn.var)")
        if "weight" not in members:
            raise EncoderConfigError(f"bnf: block {bid!r} has batch-norm members but no tensor of type 'weight' "
                                     "to fold them into")
        out[bid] = members
    return out


def _vector(tensors, name, rows):
    a = _to_numpy(name, tensors[name])
    if a.dtype.kind != "f":
        raise EncoderConfigError(f"bnf: tensor {name!r} is {a.dtype}; batch-norm folding needs float tensors")
    a = a.astype(np.float32, copy=False)
    if a.shape != (rows,):
        raise EncoderConfigError(f"bnf: tensor {name!r} has shape {tuple(a.shape)}; the block's weight has "
                                 f"{rows} rows, so every folded vector needs shape ({rows},)")
    if not np.all(np.isfinite(a)):
        raise EncoderConfigError(f"bnf: tensor {name!r} holds NaN or infinite values")
    return a


def fold_bn(tensors: dict, option: dict, eps: float = BNF_EPS):
    """(tensors, option, {created name: its block's weight}) with every block's batch norm folded into its LS and bias.

    `tensors` is a {name: array} dict in coding order (not modified); the returned dict keeps that
    order, drops the BN members and appends the vectors folding creates."""
    check_option(option)
    blocks = _blocks_with_bn(option, tensors)
    if not blocks:
        raise EncoderConfigError("bnf: no block of block_id_and_param_type carries batch-norm members "
                                 "(bn.beta, bn.gamma, bn.mean, bn.var)")
    out = dict(tensors)
    ids, types = dict(option["block_identifier"]), dict(option["parameter_type"])
    created = {}
    for bid, m in blocks.items():
        w = m["weight"]
        rows = np.shape(tensors[w])[0] if np.ndim(tensors[w]) else 0
        bn = {t: _vector(tensors, m[t], rows) for t in BN_TYPES}
        ls_name, bi_name = w + "_scaling", m.get("bias", w + ".bias")
        if "weight.ls" in m and m["weight.ls"] != ls_name:
            raise EncoderConfigError(f"bnf: block {bid!r}: the local-scaling vector must be named {ls_name!r}, "
                                     f"not {m['weight.ls']!r}")
        for name, ptype in ((ls_name, "weight.ls"), (bi_name, "bias")):
            if ptype in m:
                continue
            if name in tensors:
                raise EncoderConfigError(f"bnf: block {bid!r}: folding would create {name!r}, which is already "
                                         "a tensor of the model outside the block")
            created[name] = w
        ls = _vector(tensors, ls_name, rows).copy() if "weight.ls" in m else np.ones(rows, np.float32)
        bi = _vector(tensors, bi_name, rows) if "bias" in m else np.zeros(rows, np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            g = bn["bn.gamma"] / np.sqrt(bn["bn.var"] + np.float32(eps))
            ls *= g
            bi = (bi - bn["bn.mean"]) * g + bn["bn.beta"]
        for name, v in ((ls_name, ls), (bi_name, bi)):
            if not np.all(np.isfinite(v)):
                raise EncoderConfigError(f"bnf: block {bid!r}: the folded {name!r} is not finite (a batch-norm "
                                         f"variance at or below -{eps}?)")
        for t in BN_TYPES:
            del out[m[t]]
            ids.pop(m[t], None)
            types.pop(m[t], None)
        out[bi_name], out[ls_name] = bi, ls      # created vectors go last, bias first, as in the reference
        ids[ls_name], ids[bi_name] = bid, bid
        types[ls_name], types[bi_name] = "weight.ls", "bias"
    return out, {"block_identifier": ids, "parameter_type": types}, created
