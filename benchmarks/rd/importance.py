"""Per-parameter importance on a model's calibration data: nnr.importance where nnr has it, else the
harness's own estimate (the same definitions, so the benchmark switches without other changes).

gauss-newton: the diagonal of Σ_x JᵀJ of the module's output, estimated with Rademacher probes v on
the output: E_v[(Jᵀv)²] = diag(JᵀJ), one backward pass per probe and calibration batch (the cross
terms between the samples of a batch vanish in expectation). fisher: Σ_batches (∂ loss/∂w)², the
squared gradient of the model's loss on each calibration batch (an empirical Fisher over batches).
"""
import time

import numpy as np


def source():
    """'nnr.importance' when nnr provides it, else 'harness'."""
    import nnr
    try:
        return "nnr.importance" if callable(getattr(nnr, "importance")) else "harness"
    except AttributeError:
        return "harness"


def harness_importance(module, batches, method="gauss-newton", loss=None, probes=1, seed=0):
    """{parameter name: float64 ndarray} (see the module docstring)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    acc = [torch.zeros_like(p, dtype=torch.float64) for _, p in params]
    count = 0
    for i, x in enumerate(batches):
        out = module(x)
        if method == "fisher":
            if loss is None:
                raise ValueError("a Fisher importance needs the model's loss")
            terms = [loss(out, i)]
        else:
            terms = []
            for _ in range(probes):
                v = torch.randint(0, 2, out.shape, generator=gen).to(out.dtype) * 2 - 1
                terms.append((out * v).sum())
        for k, t in enumerate(terms):
            grads = torch.autograd.grad(t, [p for _, p in params], retain_graph=k < len(terms) - 1, allow_unused=True)
            for a, g in zip(acc, grads):
                if g is not None:
                    a += g.detach().double() ** 2
        count += len(terms) * (len(x) if method != "fisher" else 1)
    return {n: (a / max(count, 1)).numpy() for (n, _), a in zip(params, acc)}


def compute(spec, method="gauss-newton", probes=1, seed=0):
    """(importance of the coded tensors {name: ndarray}, source, seconds). Tensors whose importance
    is zero everywhere (untouched by the calibration data) are left out: the encoder codes them with
    the reference's quantizer, as it must (an all-zero importance carries no information)."""
    t0 = time.perf_counter()
    src = source()
    imp = None
    if src == "nnr.importance":
        import nnr
        try:
            imp = nnr.importance(spec.module, spec.calibration, method=method,
                                 loss=spec.loss if method == "fisher" else None, probes=probes, seed=seed)
        except TypeError as err:            # a signature other than the one this harness was written against
            src = f"harness (nnr.importance refused the call: {err})"
    if imp is None and method == "kl":
        raise RuntimeError(f"the kl importance needs nnr.importance(method='kl') ({src})")
    if imp is None:
        imp = harness_importance(spec.module, spec.calibration, method, spec.loss, probes, seed)
    spec.module.zero_grad(set_to_none=True)
    out = {}
    for name, v in imp.items():
        a = np.asarray(v, dtype=np.float64)
        if name in spec.tensors and a.size == spec.tensors[name].size and np.all(np.isfinite(a)) and a.any():
            out[name] = a.reshape(spec.tensors[name].shape)
    return out, src, time.perf_counter() - t0
