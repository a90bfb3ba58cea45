"""Per-parameter sensitivity of a torch.nn.Module on calibration inputs (`nnr.importance`): the
diagonal of JᵀJ of its output (Gauss-Newton, estimated with random probes) or the empirical Fisher
of a loss the user passes. The result is the `importance` that nnr.encode's importance-weighted
quantization takes (nnr_core/quant/weighted.py). An encoder tool beyond the standard: the streams
coded with it are ordinary NNC streams.

Gauss-Newton: with f(x) the module's output and v a Rademacher vector (±1 entries) of f's shape,
g = ∂(vᵀf)/∂θ has E[g²] = Σ_o J_o² (the cross terms vanish since E[v_o v_o'] = δ_oo'), i.e. the
diagonal of JᵀJ summed over every output entry of every sample. One probe costs one backward pass
of the batch; `probes` of them (one forward) are averaged. The module runs in eval() mode, so the
samples of a batch do not interact (batch norm uses its running statistics) and the batch sum is
the sum of the per-sample diagonals.

KL (a classifier's own Fisher, no labels): as Gauss-Newton with the probe v = e_y − p, p the softmax
of the output's last axis and y drawn from it, so E[v vᵀ] = diag(p) − p pᵀ, the Hessian of
KL(p ‖ softmax(f + δ)) in δ at 0: E[g²] = Σ_s diag(J_sᵀ (diag p_s − p_s p_sᵀ) J_s), the second-order
model of the divergence of the quantized classifier from the float one (cross terms between samples
and rows vanish since E[v] = 0). Where JᵀJ weighs every logit alike, this weighs the classes the
model believes in: on EfficientNet-Lite0 at 5.2 bits/param it gave top-1 agreement 0.92 where
Gauss-Newton gave 0.89 (benchmarks/README.md). Same cost as Gauss-Newton.

Fisher: Σ_s (∂ℓ_s/∂θ)², ℓ_s the loss of sample s alone: one forward and one backward per sample.
(Per-sample gradients by torch.func.vmap were measured slower on CPU and need a chunk of per-sample
gradients of the whole model in memory: 4.7 M-parameter MLP 22.6 s against 6.4 s for the loop,
EfficientNet-Lite0 52 s against 38 s, 64 samples, one thread.)

Unseen parameters: an entry whose importance is exactly 0 was never reached by the calibration
data (an embedding row of an absent token, a channel dead on the data); it may matter on other data,
and weighted by 0 the quantizer could zero it for free. unseen="floor" sets it to UNSEEN_FLOOR x the
mean of the tensor's nonzero entries (a tensor with none: of the model's), not to the tensor's
smallest nonzero value, which can be 1e-9 x the mean (see README.md for the measurement). With
gauss-newton an entry can also be 0 by cancellation of the ±1 probes when its per-sample Jacobian
entries are equal (the output layer's bias: Σ_s v_s = 0); more probes or more batches make that rare.

Batch-norm statistics: in eval() mode a batch-norm layer computes y = γ (x − μ) / σ + β with
σ = sqrt(v + ε) from its running mean μ and variance v, so for every sample and probe
∂ℓ/∂μ = −(γ/σ) ∂ℓ/∂β: the importance of the running mean follows exactly from that of β
(batch_norm=True), without a backward of its own, and like a bias its effect is linear. The
variance gets none: its effect goes through 1/sqrt(v + ε), so the quadratic model the importance
stands for fails at the relative errors a rate allocation would choose (a 5.2 bits/param allocation
of EfficientNet-Lite0 left one channel's v + ε 94 % off, the weights' errors being 1-7 %).

Memory: one float64 accumulator per parameter (twice a float32 model), plus what one backward of
the module needs; per-sample gradients of the whole model are never held for a whole batch.
"""
import logging
import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from nnr.errors import EncoderConfigError, NNRError
from nnr.optional import import_optional

log = logging.getLogger("nnr")

METHODS = ("gauss-newton", "kl", "fisher")
OUTPUT_KEYS = ("logits", "last_hidden_state")   # probed first in a dict-like output (transformers)
UNSEEN_FLOOR = 0.1      # unseen="floor": this fraction of the mean importance of the tensor's seen entries


class Importance(dict):
    """{state_dict name: float32 ndarray}, a plain dict, with facts about the run as attributes:
    method, probes, batches, unseen_counts {name: entries whose importance was exactly 0}."""

    def __init__(self, items=(), *, method="", probes=0, batches=0, unseen_counts=None):
        super().__init__(items)
        self.method, self.probes, self.batches = method, probes, batches
        self.unseen_counts = dict(unseen_counts or {})


def importance(module, inputs, *, method="gauss-newton", loss=None, probes=1, seed=0, unseen="floor",
               names=None, batch_norm=True, progress=None) -> Importance:
    """Per-parameter importance {state_dict name: float32 array of the parameter's shape} of `module`
    on calibration `inputs`, for nnr.encode(..., importance=...).

    inputs: a tensor or ndarray (one batch, the module's one argument), a dict (one batch of keyword
    arguments), a tuple (one batch of positional arguments), or any other iterable (list, generator,
    DataLoader) of such batches (a list inside is positional arguments too). method="gauss-newton":
    diag(JᵀJ) of the output, summed over samples, `probes` Rademacher probes per batch (one backward
    each); the output probed is a tensor, a tuple's first element, or a dict's "logits", else
    "last_hidden_state", else first tensor. method="kl": the same with probes drawn from the softmax of
    the output's last axis (a classifier's Fisher: the Hessian of its KL divergence from itself,
    no labels). method="fisher": Σ_s (∂loss_s/∂θ)², each batch an
    (inputs, target) pair and loss(output, target) called on one-sample slices (one forward and
    backward per sample). Every floating parameter that requires grad gets an entry (`names`
    restricts them); batch_norm=True adds the running_mean of every affine batch-norm layer whose
    bias has an entry (derived exactly from it, see the module's docstring); other buffers (the
    running variance among them) get none, and nnr.encode codes a tensor without an entry unweighted.
    Entries exactly 0 (never reached by the data) get unseen="floor": 0.1 x the mean of the
    tensor's nonzero entries, a number c: c x that mean, "zero": 0. progress: a
    callable(batches_done) or an nnr.progress.Progress. The module runs in eval() mode; its
    training flags, requires_grad flags and .grad are left as they were.
    """
    torch = import_optional("torch", "nnr.importance needs torch (pip install -e \".[torch]\")")
    _check_args(torch, module, method, loss, probes, seed, unseen, batch_norm, progress)
    params = _select(module, names)              # {id: (names, parameter)}, unique parameters
    if not params:
        raise EncoderConfigError("nnr.importance: the module has no floating parameter that requires grad"
                                 + (f" among names={sorted(names)}" if names is not None else ""))
    flags = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.eval()
        for p, _ in grads:
            p.requires_grad_(id(p) in params)
        with torch.enable_grad():
            acc, batches = _accumulate(torch, module, inputs, params, method, loss, probes, seed, progress)
    finally:
        for m, training in flags:
            m.training = training
        for p, requires in grads:
            p.requires_grad_(requires)
    probed = method in ("gauss-newton", "kl")
    scale = 1.0 / probes if probed else 1.0
    values = {key: acc.pop(key).mul_(scale).cpu().numpy() for key in params}    # float64, in place
    floored, counts = _unseen(values, params, unseen)
    out = Importance(method=method, probes=probes if probed else 0, batches=batches,
                     unseen_counts={params[k][0][0]: n for k, n in counts.items()})
    for key, (aliases, _p) in params.items():
        for name in aliases:            # tied parameters: one array under each name
            out[name] = floored[key]
    if batch_norm:
        out.update(_batch_norm_statistics(torch, module, out))
    return out


def _batch_norm_statistics(torch, module, imp) -> dict:
    """{name: importance} of the running means of the affine batch-norm layers whose bias (β) is in
    imp: (γ/σ)² imp(β), σ = sqrt(running_var + eps)."""
    out = {}
    keys = set(module.state_dict(keep_vars=True))
    for prefix, m in module.named_modules():
        if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or not m.affine or m.running_var is None:
            continue
        pre = f"{prefix}." if prefix else ""
        bias, mean = f"{pre}bias", f"{pre}running_mean"
        if bias not in imp or mean not in keys:
            continue
        gamma = m.weight.detach().double().cpu().numpy()
        var = m.running_var.detach().double().cpu().numpy() + float(m.eps)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            f = ((gamma * gamma / var) * imp[bias].astype(np.float64)).astype(np.float32)
        if np.all(np.isfinite(f)) and np.all(f >= 0):
            out[mean] = f
        else:       # a variance + eps that is not positive: no meaningful derivative
            log.warning("nnr.importance: %s gets no importance (the variance + eps is not positive or the value "
                        "overflows float32)", mean)
    return out


def _check_args(torch, module, method, loss, probes, seed, unseen, batch_norm, progress):
    if not isinstance(module, torch.nn.Module):
        raise EncoderConfigError(f"nnr.importance: module must be a torch.nn.Module, not {type(module).__name__}")
    if method not in METHODS:
        raise EncoderConfigError(f"nnr.importance: method must be one of {METHODS}, not {method!r}")
    if method == "fisher" and not callable(loss):
        raise EncoderConfigError("nnr.importance: method='fisher' needs loss=callable(output, target) -> "
                                 "the loss of one sample" + ("" if loss is None else f", not {type(loss).__name__}"))
    if method != "fisher" and loss is not None:
        raise EncoderConfigError(f"nnr.importance: loss is used by method='fisher' only "
                                 f"({method} probes the module's output)")
    if isinstance(probes, bool) or not isinstance(probes, numbers.Integral) or probes < 1:
        raise EncoderConfigError(f"nnr.importance: probes must be an integer >= 1, not {probes!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 63:
        raise EncoderConfigError(f"nnr.importance: seed must be an integer in [0, 2**63), not {seed!r}")
    if not ((isinstance(unseen, str) and unseen in ("floor", "zero"))
            or (isinstance(unseen, numbers.Real) and not isinstance(unseen, bool)
                and math.isfinite(unseen) and unseen >= 0)):
        raise EncoderConfigError(f"nnr.importance: unseen must be 'floor', 'zero' or a finite number >= 0 "
                                 f"(a fraction of the mean of the tensor's nonzero entries), not {unseen!r}")
    if not isinstance(batch_norm, bool):
        raise EncoderConfigError(f"nnr.importance: batch_norm must be True or False, not {batch_norm!r}")
    if progress is not None and not callable(progress) and not callable(getattr(progress, "update", None)):
        raise EncoderConfigError("nnr.importance: progress must be a callable(batches_done) or an "
                                 f"nnr.progress.Progress, not {type(progress).__name__}")


def _select(module, names):
    """{id(p): ([state_dict names], p)} of the floating parameters that require grad (and are in names)."""
    keys = set(module.state_dict(keep_vars=True))
    found = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if name in keys and p.is_floating_point() and p.requires_grad:
            found.setdefault(id(p), ([], p))[0].append(name)
    if names is None:
        return found
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise EncoderConfigError(f"nnr.importance: names must be a collection of parameter names, not {names!r}")
    wanted = set(names)
    known = {n for aliases, _ in found.values() for n in aliases}
    if wanted - known:
        bad = sorted(map(str, wanted - known))
        parameters = dict(module.named_parameters(remove_duplicate=False))
        why = ("a frozen or non-floating parameter" if bad[0] in parameters else
               "a buffer, not a parameter" if bad[0] in keys else "not in the module's state_dict")
        raise EncoderConfigError(f"nnr.importance: names {bad[:5]} are not trainable floating parameters "
                                 f"of the module ({bad[0]!r}: {why})")
    return {k: ([n for n in aliases if n in wanted], p) for k, (aliases, p) in found.items()
            if any(n in wanted for n in aliases)}


def _batches(inputs):
    """The batches of `inputs`: a tensor, ndarray, dict or tuple is one batch, any other iterable many."""
    one = (np.ndarray, Mapping, tuple)
    if _is_tensor(inputs) or isinstance(inputs, one):
        yield inputs
        return
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise EncoderConfigError("nnr.importance: inputs must be a tensor, an ndarray, a dict (keyword "
                                 "arguments), a tuple (positional arguments) or an iterable of batches, "
                                 f"not {type(inputs).__name__}")
    yield from inputs


def _is_tensor(x):
    import torch
    return isinstance(x, torch.Tensor)


def _call_args(torch, batch, index, device, dtype):
    """(args, kwargs) that call the module on `batch` (tensor / ndarray: one argument; dict: keywords;
    tuple or list: positional arguments), with ndarrays as tensors and tensors on the module's device."""
    def arg(x):
        if isinstance(x, np.ndarray):
            try:
                x = torch.from_numpy(np.ascontiguousarray(x))
            except TypeError:
                raise EncoderConfigError(f"nnr.importance: batch {index}: an ndarray of dtype {x.dtype} is not "
                                         "a tensor torch can hold") from None
            if x.is_floating_point():
                x = x.to(dtype)
        return x.to(device) if _is_tensor(x) else x
    if _is_tensor(batch) or isinstance(batch, np.ndarray):
        return (arg(batch),), {}
    if isinstance(batch, Mapping):
        return (), {k: arg(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(arg(v) for v in batch), {}
    raise EncoderConfigError(f"nnr.importance: batch {index} is a {type(batch).__name__}; a batch is a tensor, "
                             "an ndarray, a dict (keyword arguments) or a tuple/list (positional arguments)")


def _probed(torch, out, index):
    """The output tensor Gauss-Newton probes: a tensor; a tuple/list's first element; a dict's
    'logits', else 'last_hidden_state', else its first tensor value."""
    y = out
    if isinstance(out, (tuple, list)):
        y = out[0] if out else None
    elif isinstance(out, Mapping):
        key = next((k for k in OUTPUT_KEYS if _is_tensor(out.get(k))), None)
        y = out[key] if key else next((v for v in out.values() if _is_tensor(v)), None)
    if not _is_tensor(y) or not y.is_floating_point() or y.numel() == 0:
        what = type(y).__name__ if not _is_tensor(y) else f"{y.dtype} tensor of shape {tuple(y.shape)}"
        raise EncoderConfigError(f"nnr.importance: batch {index}: the module's output to probe is a {what}; "
                                 "it must be a non-empty floating tensor (wrap the module to return one)")
    if not bool(torch.isfinite(y).all()):
        raise EncoderConfigError(f"nnr.importance: batch {index}: the module's output has NaN or inf entries")
    if not y.requires_grad:
        raise EncoderConfigError(f"nnr.importance: batch {index}: the module's output does not depend on "
                                 "the selected parameters")
    return y


def _accumulate(torch, module, inputs, params, method, loss, probes, seed, progress):
    """({id: float64 Σ g²}, number of batches) over every batch of `inputs`."""
    first = next(iter(params.values()))[1]
    device, dtype = first.device, first.dtype
    keys = list(params)
    plist = [params[k][1] for k in keys]
    acc = {k: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for k, p in zip(keys, plist)}
    gen = torch.Generator().manual_seed(int(seed))
    batches = 0
    for index, batch in enumerate(_batches(inputs)):
        if method != "fisher":
            args, kwargs = _call_args(torch, batch, index, device, dtype)
            y = _probed(torch, _run(module, args, kwargs, index), index)
            for k in range(probes):
                v = _probe(torch, y, method, gen)
                g = torch.autograd.grad(y, plist, grad_outputs=v, retain_graph=k < probes - 1, allow_unused=True)
                _add(acc, keys, g)
            del y
        else:
            _fisher_batch(torch, module, batch, index, params, keys, acc, loss, device, dtype)
        for k in keys:
            if not bool(torch.isfinite(acc[k]).all()):
                raise EncoderConfigError(f"nnr.importance: the importance of {params[k][0][0]!r} is not finite "
                                         f"after batch {index} (NaN or inf in the module's output or gradients)")
        batches += 1
        if hasattr(progress, "update"):
            progress.update(1, item=f"batch {index}")
        elif progress is not None:
            progress(batches)
    if not batches:
        raise EncoderConfigError("nnr.importance: inputs has no batch")
    return acc, batches


def _probe(torch, y, method, gen):
    """A probe of output y: Rademacher (gauss-newton) or e_c − p with c drawn from p = softmax(y) (kl)."""
    if method == "gauss-newton":
        return (torch.randint(0, 2, y.shape, generator=gen) * 2 - 1).to(dtype=y.dtype, device=y.device)
    if y.ndim < 1 or y.shape[-1] < 2:
        raise EncoderConfigError(f"nnr.importance: method='kl' needs an output whose last axis holds the "
                                 f"logits of 2 or more classes, not shape {tuple(y.shape)}")
    p = torch.softmax(y.detach().double(), dim=-1).reshape(-1, y.shape[-1]).cpu()
    v = -p
    v[torch.arange(p.shape[0]), torch.multinomial(p, 1, generator=gen)[:, 0]] += 1.0
    return v.reshape(y.shape).to(dtype=y.dtype, device=y.device)


def _forward_all(torch, module, inputs, after_batch=None) -> int:
    """Call `module` in eval() mode, without gradients, on every batch of `inputs` (on the device and
    floating dtype of its first parameter), after_batch() after each; the training flags are
    restored. Returns the number of batches."""
    p = next(iter(module.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None else torch.float32
    flags = [(m, m.training) for m in module.modules()]
    batches = 0
    try:
        module.eval()
        with torch.no_grad():
            for index, batch in enumerate(_batches(inputs)):
                args, kwargs = _call_args(torch, batch, index, device, dtype)
                _run(module, args, kwargs, index)
                batches += 1
                if after_batch is not None:
                    after_batch()
    finally:
        for m, training in flags:
            m.training = training
    return batches


def _run(fn, args, kwargs, index, what="the module"):
    """fn(*args, **kwargs), its failure an EncoderConfigError that names the batch (chained to the cause)."""
    try:
        return fn(*args, **kwargs)
    except (NNRError, MemoryError):
        raise
    except Exception as exc:
        raise EncoderConfigError(f"nnr.importance: batch {index}: {what} raised {type(exc).__name__}: "
                                 f"{str(exc).strip()[:300]}") from exc


def _add(acc, keys, grads):
    for k, g in zip(keys, grads):
        if g is not None:
            g = g.detach().double()
            acc[k].addcmul_(g, g)


def _fisher_batch(torch, module, batch, index, params, keys, acc, loss, device, dtype):
    """Add Σ_s (∂ℓ_s/∂θ)² of one (inputs, target) batch to acc: one forward and backward per sample."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise EncoderConfigError(f"nnr.importance: batch {index}: method='fisher' takes (inputs, target) "
                                 f"pairs, not a {type(batch).__name__}{size}")
    inp, target = batch
    args, kwargs = _call_args(torch, inp, index, device, dtype)
    target = _call_args(torch, (target,), index, device, dtype)[0][0]
    flat = list(args) + list(kwargs.values()) + [target]
    sizes = {int(t.shape[0]) for t in flat if _is_tensor(t) and t.dim() > 0}
    if len(sizes) != 1:
        raise EncoderConfigError(f"nnr.importance: batch {index}: the tensors of a fisher batch must share their "
                                 f"first (sample) dimension, found sizes {sorted(sizes) or 'none'}")
    plist = [params[k][1] for k in keys]
    for s in range(sizes.pop()):
        vals = [x[s:s + 1] if _is_tensor(x) and x.dim() > 0 else x for x in flat]
        out = _run(module, vals[:len(args)], dict(zip(kwargs, vals[len(args):-1])), index)
        lv = _sample_loss(torch, _run(loss, (out, vals[-1]), {}, index, "loss"), index, s)
        _add(acc, keys, torch.autograd.grad(lv, plist, allow_unused=True))


def _sample_loss(torch, value, index, sample):
    if not _is_tensor(value) or value.numel() != 1 or not value.is_floating_point():
        what = f"shape {tuple(value.shape)}" if _is_tensor(value) else type(value).__name__
        raise EncoderConfigError(f"nnr.importance: batch {index}: loss(output, target) on one sample must "
                                 f"return a floating tensor with one element, not {what}")
    if not bool(torch.isfinite(value).all()):
        raise EncoderConfigError(f"nnr.importance: batch {index}, sample {sample}: the loss is {float(value.detach())}")
    return value.reshape(())


def _unseen(values, params, unseen):
    """Entries exactly 0 (never touched by the data) set as `unseen` says; float32 arrays and counts."""
    counts = {k: int(np.count_nonzero(v == 0)) for k, v in values.items()}
    sums = {k: (float(v.sum()), v.size - counts[k]) for k, v in values.items()}
    seen_sum, seen = sum(a for a, _ in sums.values()), sum(n for _, n in sums.values())
    if not seen:
        raise EncoderConfigError("nnr.importance: the importance is 0 for every parameter: the output does not "
                                 "depend on the parameters on these inputs")
    fraction = 0.0 if unseen == "zero" else UNSEEN_FLOOR if unseen == "floor" else float(unseen)
    out = {}
    for k, v in values.items():
        if counts[k] and fraction:
            total, n = sums[k] if sums[k][1] else (seen_sum, seen)
            v[v == 0] = fraction * total / n
        with np.errstate(over="ignore"):
            f = v.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise EncoderConfigError(f"nnr.importance: the importance of {params[k][0][0]!r} overflows float32 "
                                     "(scale the module's output down)")
        f[(f == 0) & (v > 0)] = np.finfo(np.float32).tiny      # seen, below float32's range
        out[k] = f
    n = sum(counts.values())
    if n:
        log.info("nnr.importance: %d of %d entries in %d tensors unseen by the calibration data (importance "
                 "0)%s", n, sum(v.size for v in values.values()), sum(1 for c in counts.values() if c),
                 ", kept 0" if not fraction else f", set to {fraction:g} x the mean importance of the tensor's "
                 "seen entries")
    return out, {k: c for k, c in counts.items() if c}
