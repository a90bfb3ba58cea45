"""The input second moments of a torch module's layers (`nnr.rd.layer_hessians`), for output-aware
rounding (`nnr.encode(..., hessians=...)`, nnr_core/quant/gptq.py).

For a layer y = W x (a Linear layer's inputs, a convolution's input patches), the output error of
W' is sum over samples of ||(W - W') x||^2 = sum_rows (w - w') H (w - w')^T with H = sum x x^T: the
Hessian of the layer's squared output error, the same for every row. A grouped convolution has one H
per group (a depthwise convolution one per channel). Memory: one (d, d) float64 matrix per layer
(d = inputs per output: 1280 for EfficientNet-Lite0's classifier, 13 MB), patches taken 4096
positions at a time.
"""
import logging

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.optional import import_optional

log = logging.getLogger("nnr")

CHUNK = 4096        # patch positions per accumulation step


def layer_hessians(module, inputs) -> dict:
    """{weight name: float64 H}: sum of x x^T over every input x that each Linear, Conv1d and Conv2d
    layer of `module` sees on the calibration `inputs` (as nnr.importance takes them: a tensor,
    dict, tuple or an iterable of them), off-diagonal entries shrunk by n / (n + d) for n inputs
    (`shrunk`); (d, d), or (groups, d, d) for a grouped convolution. A
    convolution's patches include its own `padding`; a module that pads inside its own forward has
    H without the border patches. Layers not reached by the inputs get no entry; Conv3d and
    transposed convolutions are left out (logged). The module's training flags are restored."""
    torch = import_optional("torch", "nnr.rd.layer_hessians needs torch (pip install -e \".[torch]\")")
    from nnr.rd.importance import _forward_all
    if not isinstance(module, torch.nn.Module):
        raise EncoderConfigError(f"nnr.rd.layer_hessians: module must be a torch.nn.Module, not "
                                 f"{type(module).__name__}")
    acc, hooks, skipped = {}, [], []
    for name, m in module.named_modules():
        w = f"{name}.weight" if name else "weight"
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and \
                not isinstance(m, torch.nn.modules.conv._ConvTransposeNd):
            hooks.append(m.register_forward_hook(_hook(torch, acc, w)))
        elif isinstance(m, torch.nn.modules.conv._ConvNd):
            skipped.append(w)
    if skipped:
        log.info("nnr.rd.layer_hessians: %d layer(s) not supported (Conv3d, transposed): %s", len(skipped),
                 ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    try:
        batches = _forward_all(torch, module, inputs)
    finally:
        for h in hooks:
            h.remove()
    if not batches:
        raise EncoderConfigError("nnr.rd.layer_hessians: inputs has no batch")
    out = {}
    for w, (h, n) in acc.items():
        h = h.cpu().numpy()
        if not np.all(np.isfinite(h)):
            raise EncoderConfigError(f"nnr.rd.layer_hessians: the inputs of {w!r} hold NaN or inf values")
        out[w] = shrunk(h[0] if h.shape[0] == 1 else h, n)
    return out


def shrunk(h, n):
    """h summed from n input vectors with its off-diagonal entries scaled by n / (n + d): from few
    samples (n not far above d, or below it) the sum is a poor, often singular estimate of the inputs'
    correlations, and rounding against it moves the error into directions the calibration inputs
    happen not to span (n -> 0: plain rounding; n >> d: H as summed). EfficientNet-Lite0's classifier
    (d = 1280) sees one vector per image: 180 calibration images give H of rank 180.
    """
    d = h.shape[-1]
    keep = n / (n + d)
    diag = np.diagonal(h, axis1=-2, axis2=-1).copy()
    out = h * keep
    idx = np.arange(d)
    out[..., idx, idx] = diag
    return out


def _hook(torch, acc, weight_name):
    def hook(mod, args, out):
        x = args[0] if args else None
        if not torch.is_tensor(x) or not x.is_floating_point():
            return
        x = x.detach()
        if isinstance(mod, torch.nn.Linear):
            cols = x.reshape(-1, x.shape[-1]).double()
            h, n = (cols.T @ cols)[None], cols.shape[0]
        else:
            h, n = _conv_moments(torch, mod, x)
        h0, n0 = acc.get(weight_name, (0, 0))
        acc[weight_name] = (h0 + h, n0 + n)
    return hook


def _conv_moments(torch, mod, x):
    """((groups, d, d) sum of patch x patch^T over positions and samples per group, patches per group)."""
    import torch.nn.functional as F
    if isinstance(mod, torch.nn.Conv1d):
        x = x.unsqueeze(-2)
        kernel, stride, dilation = (1,) + tuple(mod.kernel_size), (1,) + tuple(mod.stride), (1,) + tuple(mod.dilation)
    else:
        kernel, stride, dilation = tuple(mod.kernel_size), tuple(mod.stride), tuple(mod.dilation)
    padding = _padding(mod, kernel, dilation)
    if mod.padding_mode != "zeros" and any(padding):
        pads = [p for p in reversed(padding) for _ in range(2)]
        x = F.pad(x, pads, mode=mod.padding_mode)
        padding = (0,) * len(padding)
    g = mod.groups
    h = n = 0
    for sample in x:
        patches = F.unfold(sample[None], kernel, dilation=dilation, padding=padding, stride=stride)[0]
        d = patches.shape[0] // g
        patches = patches.reshape(g, d, -1)
        n += patches.shape[-1]
        for i in range(0, patches.shape[-1], CHUNK):
            c = patches[:, :, i:i + CHUNK].double()
            h = h + c @ c.transpose(1, 2)
    return h, n


def _padding(mod, kernel, dilation):
    """The module's zero padding per spatial dimension (torch's own rule for padding='same')."""
    pad = mod.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0,) * len(kernel)
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total):
            raise EncoderConfigError(f"nnr.rd.layer_hessians: padding='same' with an even kernel extent "
                                     f"{tuple(kernel)} pads unevenly; give the padding as numbers")
        return tuple(t // 2 for t in total)
    pad = tuple(pad)
    return pad if len(pad) == len(kernel) else (0,) + pad
