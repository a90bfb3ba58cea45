"""Batch-norm folding for models (HLS §9.5): which batch norm belongs to which layer, and the decoder's
way back (unfold_bn, apply_lsa). The folding itself is the encoder's ``bnf=True``
(nnr_core/encoder/bnf.py).

``guess_block_id_and_param_type`` is the reference's PyTorch rule (NNCodec 2.1.3
``PytorchModel.guess_block_id_and_param_type``), so that ``nnr.encode(state_dict, bnf=True,
block_id_and_param_type=guess(...), framework="pytorch")`` writes ``compress_model(module,
bnf=True)``'s bytes. The batch-norm tensors come from the module (``bn_names_of_module``) or, for a
bare state_dict, from its structure (``bn_names_of_state_dict``).
"""
import numpy as np

from nnr.errors import EncoderConfigError
from nnr_core.encoder.bnf import BNF_EPS

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def bn_names_of_module(module) -> set:
    """The state_dict names of the module's batch-norm parameters and statistics (any
    torch.nn.modules.batchnorm._BatchNorm; REF-QUIRK: the reference recognises BatchNorm2d only, and
    with other batch norms its block check fails and it codes the model unfolded)."""
    import torch
    out = set()
    for prefix, m in module.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            head = prefix + "." if prefix else ""
            out.update(head + s for s in BN_SUFFIXES if getattr(m, s, None) is not None)
    return out


def bn_eps_of_module(module) -> float:
    """The epsilon the module's batch norms share (BatchNorm's default 1e-5 when it has none); an
    EncoderConfigError when they differ (folding takes one)."""
    import torch
    eps = {float(m.eps) for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    if len(eps) > 1:
        raise EncoderConfigError(f"bnf: the module's batch norms have different eps {sorted(eps)}; folding "
                                 "takes one (fold them with nnr.encode and bnf_eps per group)")
    return eps.pop() if eps else BNF_EPS


def module_option(module, names=None) -> dict:
    """guess_block_id_and_param_type over the module's state_dict (shapes, in its order; only the
    tensors in `names` when given), its batch norms from its modules."""
    shapes = {n: tuple(t.shape) for n, t in module.state_dict(keep_vars=True).items() if names is None or n in names}
    return guess_block_id_and_param_type(shapes, bn_names_of_module(module))


def bn_names_of_state_dict(tensors) -> set:
    """The names of the batch norms a state_dict shows by its structure: a prefix with 1-D weight,
    bias, running_mean and running_var of one length (what torch's batch norms store)."""
    shapes = {n: np.shape(v) for n, v in tensors.items()}
    out = set()
    for name in shapes:
        if not name.endswith(".running_mean"):
            continue
        head = name[: -len("running_mean")]
        group = [head + s for s in BN_SUFFIXES]
        if all(g in shapes and len(shapes[g]) == 1 for g in group) and len({shapes[g] for g in group}) == 1:
            out.update(group)
    return out


def _param_type(param, dims, bn):
    """(parameter type, in a block) by the reference's name rules."""
    end = param.split(".")[-1]
    if dims > 1:
        return "weight", True
    if dims != 1:
        return "unspecified", False
    if bn and not param.endswith(".weight_scaling"):
        for key, ptype in (("weight", "bn.gamma"), ("bias", "bn.beta"), ("running_mean", "bn.mean"),
                           ("running_var", "bn.var")):
            if key in end:
                return ptype, True
        return None, None        # REF-QUIRK: a flagged name matching none keeps the previous type
    for keys, ptype in ((("bias", "beta"), "bias"), (("running_mean", "moving_mean"), "bn.mean"),
                        (("running_var", "moving_variance"), "bn.var"), (("weight_scaling",), "weight.ls"),
                        (("gamma",), "bn.gamma"), (("weight",), "weight")):
        if any(k in end for k in keys):
            return ptype, True
    return "unspecified", False


def guess_block_id_and_param_type(tensors, bn_names=()) -> dict:
    """The reference's block option for a PyTorch state_dict ({name: array or shape tuple}, in
    state_dict order):
    each weight with the 1-D tensors of its module (bias, LS) as a block, and the batch norms, in
    order, joined to the first following weight block that has a dimension of their size."""
    option = {"block_identifier": {}, "parameter_type": {}}
    blocks, num = {}, -1
    ptype, blocked = None, False
    for param, value in tensors.items():
        if ".num_batches_tracked" in param or "aux_classifier" in param:
            continue
        shape = tuple(value) if isinstance(value, tuple) else tuple(np.shape(value))
        parts = param.split(".")
        base = ".".join(parts[:-1] + [""]) if len(parts) > 1 else "genericBlk."
        new_type, new_blocked = _param_type(param, len(shape), param in bn_names)
        if new_type is not None:
            ptype, blocked = new_type, new_blocked
        if not blocked:
            option["parameter_type"][param] = ptype
            option["block_identifier"][param] = None
            continue
        key = base + str(num)
        if key in blocks:
            if any(entry[1] == ptype for entry in blocks[key]):
                num += 1
        else:
            num += 1
        key = base + str(num)
        blocks.setdefault(key, []).append((param, ptype, key, shape))
    weight_blocks = [b for b in blocks.values() if not any("bn." in e[1] for e in b)]
    bn_blocks = [b for b in blocks.values() if any("bn." in e[1] for e in b)]
    for block in weight_blocks:
        weight_shape, weight_id = None, None
        for param, ptype, bid, shape in block:
            option["parameter_type"][param] = ptype
            option["block_identifier"][param] = bid
            if ptype == "weight":
                weight_shape, weight_id = shape, bid
        if bn_blocks and weight_shape is not None and any(d == bn_blocks[0][0][3][0] for d in weight_shape):
            for param, ptype, _, _ in bn_blocks.pop(0):
                option["parameter_type"][param] = ptype
                option["block_identifier"][param] = weight_id
    for block in bn_blocks:               # batch norms no weight took: the reference leaves them out
        for param, ptype, _, _ in block:
            option["parameter_type"][param] = ptype
            option["block_identifier"][param] = None
    return option


def folded_blocks(option) -> list:
    """[(weight, bias or None, has an LS vector, {bn type: name})] of the option's blocks with batch
    norms."""
    groups = {}
    for name, bid in option["block_identifier"].items():
        if bid is not None:
            groups.setdefault(bid, {})[option["parameter_type"].get(name)] = name
    out = []
    for members in groups.values():
        if "weight" in members and "bn.gamma" in members:
            out.append((members["weight"], members.get("bias"), "weight.ls" in members,
                        {t: members[t] for t in ("bn.beta", "bn.gamma", "bn.mean", "bn.var") if t in members}))
    return out


def unfold_bn(tensors: dict, block_id_and_param_type: dict, eps: float = BNF_EPS) -> dict:
    """Decoded tensors of a folded stream back under the model's names: each batch norm as
    gamma = LS, beta = BI, mean = 0, var = 1 − eps (so that it computes LS·x + BI, the folded
    layer, up to float32 rounding), the layer's own bias and LS (if it had them) 0 and 1, else gone.
    `block_id_and_param_type` is the option the stream was encoded with (before folding).
    REF-QUIRK: the reference's decompress(..., reconstruct_bnf=True) returns the decoded tensors
    unchanged (it applies the option to an empty parameter list)."""
    out = dict(tensors)
    for weight, bias, had_ls, bn in folded_blocks(block_id_and_param_type):
        ls_name, bi_name = weight + "_scaling", bias or weight + ".bias"
        carried = [n for n in bn.values() if n in tensors]
        if carried:
            raise EncoderConfigError(f"unfold_bn: the decoded tensors carry the batch norm {carried[0]!r}: the "
                                     "stream was not encoded with bnf=True")
        missing = [n for n in (weight, ls_name, bi_name) if n not in tensors]
        if missing:
            raise EncoderConfigError(f"unfold_bn: the decoded tensors have no {missing[0]!r}; was the stream "
                                     "encoded with bnf=True and this block_id_and_param_type?")
        ls = np.asarray(tensors[ls_name], dtype=np.float32)
        bi = np.asarray(tensors[bi_name], dtype=np.float32)
        if had_ls:
            out[ls_name] = np.ones_like(ls)
        else:
            del out[ls_name]
        if bias is None:
            del out[bi_name]
        else:
            out[bias] = np.zeros_like(bi)
        out[bn["bn.gamma"]] = ls.copy()
        out[bn["bn.beta"]] = bi.copy()
        out[bn["bn.mean"]] = np.zeros_like(ls)
        out[bn["bn.var"]] = np.full_like(ls, 1.0 - eps)
    return out


def apply_lsa(decoded) -> dict:
    """{name: array} with every local-scaling vector multiplied into its weight's rows and dropped, and
    low-rank pairs recomposed, as the reference's decompress(..., reconstruct_lsa=True). `decoded` is
    Decoder.decode_tensors' list (nnr.recompose.tensor_dict)."""
    from nnr.recompose import tensor_dict
    return tensor_dict(decoded, recompose=True, lsa=True)
