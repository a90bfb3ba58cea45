"""Local scaling adaptation (LSA, HLS §9.5): one factor per output channel of each Linear / Conv layer,
trained after quantization so that the decoded network, its weights scaled row by row, matches the
float network again; carried as the LS member of the layer's NNR_PT_BLOCK (`<weight>_scaling`), and
multiplied into the weight rows by the decoder on request (`nnr.decode(..., lsa=True)`, the
reference's `decompress(..., reconstruct_lsa=True)`). The reference's `run_ft_and_lsa` trains the
factors on its own task loss; here the default needs no labels: the mean squared difference between
the decoded network's outputs and the float network's on the calibration inputs (a `loss` callable
replaces it, e.g. a task loss on labelled batches).
"""
import logging

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.optional import import_optional

log = logging.getLogger("nnr")
LS_STEP_LOG2 = -12          # the factors' default step, 2^-12: near 1 they cost ~12 bits, err 1e-4


def _layers(torch, module, decoded):
    """{weight name: layer} of the Linear and Conv layers whose weight was decoded."""
    out = {}
    for name, m in module.named_modules():
        w = f"{name}.weight" if name else "weight"
        if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and w in decoded:
            if np.size(decoded[w]) != m.weight.numel():
                raise EncoderConfigError(f"nnr.rd.train_lsa: decoded {w!r} has {np.size(decoded[w])} elements, the "
                                         f"module's weight {m.weight.numel()}")
            out[w] = m
    if not out:
        raise EncoderConfigError("nnr.rd.train_lsa: no Linear or Conv layer of the module has its weight among the "
                                 "decoded tensors")
    return out


def _first_tensor(torch, out):
    if torch.is_tensor(out):
        return out
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for v in values:
        if torch.is_tensor(v):
            return v
    raise EncoderConfigError(f"nnr.rd.train_lsa: the module returns a {type(out).__name__} without a tensor; pass "
                             "loss=callable(output, teacher_output, batch)")


def train_lsa(module, decoded, inputs, *, epochs=1, lr=1e-3, loss=None, seed=0, progress=None) -> dict:
    """{<weight>_scaling: float32 factors, one per output channel} for each Linear / Conv layer of the
    torch `module` whose weight is in `decoded` (a model's decoded tensors, nnr.decode). The factors
    start at 1 and are trained with Adam (`lr`, `epochs` passes over `inputs`: calibration batches as
    nnr.importance takes them; a list or a DataLoader for more than one pass) on the decoded network,
    every decoded tensor in place and each such weight scaled row by row; the loss is
    loss(output, teacher_output, batch) or the mean squared difference from the float module's
    output. progress(step, loss value), if given, is called after every step. The module itself is
    left as it was."""
    torch = import_optional("torch", "nnr.rd.train_lsa needs torch (pip install -e \".[torch]\")")
    from torch.func import functional_call

    from nnr.rd.importance import _batches, _call_args, _run
    if not isinstance(module, torch.nn.Module):
        raise EncoderConfigError(f"nnr.rd.train_lsa: module must be a torch.nn.Module, not {type(module).__name__}")
    if not (isinstance(epochs, int) and epochs >= 1) or not (isinstance(lr, (int, float)) and lr > 0):
        raise EncoderConfigError(f"nnr.rd.train_lsa: epochs must be an int >= 1 and lr a number > 0 "
                                 f"(got {epochs!r}, {lr!r})")
    layers = _layers(torch, module, decoded)
    state = module.state_dict()
    fixed = {k: torch.from_numpy(np.ascontiguousarray(decoded[k], dtype=np.float32)).reshape(v.shape).to(v.dtype)
             for k, v in state.items() if k in decoded and v.is_floating_point()}
    torch.manual_seed(seed)
    scales = {w: torch.ones(m.weight.shape[0], dtype=m.weight.dtype, requires_grad=True) for w, m in layers.items()}
    opt = torch.optim.Adam(list(scales.values()), lr=lr)
    device = next(iter(module.parameters())).device
    flags = [(m, m.training) for m in module.modules()]
    steps = 0
    try:
        module.eval()
        for _ in range(epochs):
            for index, batch in enumerate(_batches(inputs)):
                args, kwargs = _call_args(torch, batch, index, device, next(iter(fixed.values())).dtype)
                with torch.no_grad():
                    teacher = _run(module, args, kwargs, index)
                params = dict(fixed)
                for w, s in scales.items():
                    params[w] = fixed[w] * s.reshape((-1,) + (1,) * (fixed[w].dim() - 1))
                out = _run(lambda *a, **k: functional_call(module, params, a, k), args, kwargs, index)
                if loss is not None:
                    value = loss(out, teacher, batch)
                else:
                    value = torch.nn.functional.mse_loss(_first_tensor(torch, out), _first_tensor(torch, teacher))
                opt.zero_grad()
                value.backward()
                opt.step()
                steps += 1
                if progress is not None:
                    progress(steps, float(value.detach()))
    finally:
        for m, training in flags:
            m.training = training
    if steps == 0:
        raise EncoderConfigError("nnr.rd.train_lsa: inputs yielded no batch")
    out = {w + "_scaling": s.detach().cpu().numpy().astype(np.float32) for w, s in scales.items()}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise EncoderConfigError(f"nnr.rd.train_lsa: the factors of {k!r} are not finite (lower lr)")
    return out


def lsa_blocks(tensors, factors) -> dict:
    """The block option that puts each factor vector in a block with its weight (and the layer's bias)."""
    ids, types = {}, {}
    for ls in factors:
        w = ls[: -len("_scaling")]
        head = w[: -len(".weight")] if w.endswith(".weight") else w
        ids[w], types[w] = head, "weight"
        ids[ls], types[ls] = head, "weight.ls"
        bias = head + ".bias" if w.endswith(".weight") else None
        if bias in tensors and np.shape(tensors[bias]) == np.shape(factors[ls]):
            ids[bias], types[bias] = head, "bias"
    return {"block_identifier": ids, "parameter_type": types}


def encode_lsa(module, tensors, inputs, *, ls_qp=None, epochs=1, lr=1e-3, loss=None, progress=None,
               **options) -> bytes:
    """nnr.encode(tensors, **options), then LSA: decode, train the factors (train_lsa), and encode
    again with every tensor at the QP it had (so its levels are the first stream's), each factor
    vector at `ls_qp` (default: the step 2^-12 at the stream's qp_density) in a block with its
    layer's weight and bias. Decode with lsa=True to get the
    scaled weights. `options` may not hold block_id_and_param_type or bnf; with target_bpp the
    first stream fits the budget and the factors come on top."""
    import nnr
    for key in ("block_id_and_param_type", "bnf"):
        if options.get(key):
            raise EncoderConfigError(f"nnr.rd.encode_lsa builds the blocks itself; it cannot take {key}")
    first = nnr.encode(tensors, **options)
    dec = nnr.Decoder()
    decoded = dec.decode(first)
    factors = train_lsa(module, decoded, inputs, epochs=epochs, lr=lr, loss=loss, progress=progress)
    opts = {k: v for k, v in options.items() if k != "target_bpp"}
    density = next((int(u.fields["mps_qp_density"]) for u in dec.units if "mps_qp_density" in u.fields), None)
    if density is not None:
        opts["qp_density"] = density
    qps = {t.name: int(t.qp) for t in dec.tensors if t.qp is not None}
    if ls_qp is None:
        ls_qp = LS_STEP_LOG2 << (density if density is not None else 2)      # QP = log2(step) * 2^qp_density
    qps.update(dict.fromkeys(factors, int(ls_qp)))
    opts["qp_per_tensor"] = qps
    return nnr.encode({**tensors, **factors}, block_id_and_param_type=lsa_blocks(tensors, factors), **opts)
