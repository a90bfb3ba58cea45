"""Sparsification before coding, measured: a small CNN trained on scikit-learn's digits, pruned with
`nnr.rd.sparsify` (magnitude or importance saliency, per tensor or global, unstructured or whole
output rows), then coded with nnr (qp -32, and coarser), against the dense model at coarser QPs.

Data: load_digits (1,797 8x8 images), split 70/30 stratified (random_state 0). The training part
(1,257 images) trains the model and fine-tunes it; its first 256 images (after a seeded shuffle)
are the calibration set for the importance (per-sample squared gradients of the cross-entropy,
summed: the diagonal empirical Fisher). Evaluation: test accuracy on the 540 held-out images,
disjoint from both. Accuracy is the mean over three training seeds.

    pip install torch==2.13.0 scikit-learn
    python examples/sparsify_digits.py [--seeds 3] [--markdown PATH]
"""
import argparse
import time

import numpy as np

import nnr
from nnr.rd.sparsify import sparsify
from nnr_core.encoder.sparsify import count, lowest, lowest_sized, rows_to_mask, saliency

SPARSITIES = (0.3, 0.5, 0.7, 0.9)
CALIBRATION = 256


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    perm = np.random.default_rng(0).permutation(len(xtr))
    xtr, ytr = xtr[perm], ytr[perm]
    return (xtr, ytr), (xtr[:CALIBRATION], ytr[:CALIBRATION]), (xte, yte)


def net():
    """The CNN: conv 1->16, conv 16->32 (3x3, ReLU, max-pool), linear 128->64->10 (13.6 k weights)."""
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model, x, y, epochs, seed, masks=None, lr=1e-3):
    """Adam on (x, y); with masks {name: keep-mask}, masked weights are held at zero."""
    import torch
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    params = dict(model.named_parameters())
    keep = {n: torch.from_numpy(m) for n, m in (masks or {}).items()}
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            with torch.no_grad():
                for n, k in keep.items():
                    params[n].mul_(k)
    return model


def state(model):
    return {n: v.detach().numpy().copy() for n, v in model.state_dict().items()}


def load(model, tensors):
    import torch
    model.load_state_dict({n: torch.from_numpy(np.asarray(v, dtype=np.float32)) for n, v in tensors.items()})
    return model


def accuracy(model, tensors, x, y):
    import torch
    load(model, tensors)
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def fisher(model, x, y):
    """Σ over samples of the squared per-sample gradient of the cross-entropy (diagonal empirical Fisher)."""
    import torch
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        out = model(torch.from_numpy(x[i:i + 1]))
        torch.nn.functional.cross_entropy(out, torch.tensor([int(y[i])])).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad.detach() ** 2
    return {n: a.numpy().astype(np.float64) for n, a in acc.items()}


def raw_magnitude_global(tensors, fraction, structured):
    """Global magnitude without per-tensor normalisation (for comparison only; not offered by sparsify)."""
    names = [n for n, a in tensors.items() if a.ndim >= 2 and not (structured and n == LAST)]
    scores = [saliency(tensors[n], structured=structured) for n in names]
    if structured:
        sizes = np.concatenate([np.full(s.size, tensors[n].size // s.size) for n, s in zip(names, scores)])
        flat = lowest_sized(np.concatenate(scores), sizes, count(fraction, sum(tensors[n].size for n in names)))
    else:
        flat = lowest(np.concatenate(scores), count(fraction, sum(s.size for s in scores)))
    out = dict(tensors)
    for n, z in zip(names, np.split(flat, np.cumsum([s.size for s in scores])[:-1])):
        keep = rows_to_mask(tensors[n].shape, z) if structured else ~z.reshape(tensors[n].shape)
        out[n] = np.where(keep, tensors[n], 0).astype(tensors[n].dtype)
    return out


METHODS = {          # name -> kwargs of sparsify (None: raw global magnitude, for comparison)
    "magnitude, per tensor": dict(scope="per-tensor"),
    "magnitude, global, raw |w| (not offered)": None,
    "magnitude, global, normalised": dict(scope="global"),
    "importance, per tensor": dict(scope="per-tensor", importance=True),
    "importance, global, β = 1 (pure F·w²)": dict(scope="global", importance=True, importance_mix=1.0),
    "importance, global (β = 0.9, the default)": dict(scope="global", importance=True),
}
RESCALED_METHODS = ("magnitude, per tensor", "magnitude, global, raw |w| (not offered)",
                    "magnitude, global, normalised", "importance, global (β = 0.9, the default)")
LAST = "9.weight"         # the classifier: its rows are the classes, never zeroed by structured pruning
RESCALE = {"7": 1 / 8, "9": 8.0}     # an equivalent model: fc1 (weight, bias) x 1/8, fc2's weight x 8


def prune(tensors, imp, fraction, structured, kwargs):
    if kwargs is None:
        return raw_magnitude_global(tensors, fraction, structured)
    kw = dict(kwargs)
    if kw.pop("importance", False):
        kw["importance"] = imp
    return sparsify(tensors, fraction, structured=structured, exclude=[LAST] if structured else (), **kw)[0]


def rescaled(tensors, imp):
    """The same function with other weights (ReLU is positively homogeneous): fc1 x a, fc2's weight
    x 1/a; the importance F scales by 1/a² where w scales by a, so F·w² is unchanged."""
    t, f = dict(tensors), dict(imp)
    a = RESCALE["7"]
    for n in ("7.weight", "7.bias"):
        t[n], f[n] = (t[n] * a).astype(np.float32), f[n] / a ** 2
    t["9.weight"], f["9.weight"] = (t["9.weight"] / a).astype(np.float32), f["9.weight"] * a ** 2
    return t, f


def kept_rows_only(tensors, masks):
    """The pruned tensors with their zero rows removed: the smaller model structured pruning makes."""
    out = {}
    for n, a in tensors.items():
        if n in masks:
            keep = masks[n].reshape(a.shape[0], -1).any(axis=1)
            if not keep.any():
                continue
            a = a[keep]
        out[n] = a
    return out


def zeroed(mask):
    return int(np.count_nonzero(~mask))


def pin(masks):
    """Distortion weights that keep the trellis's levels at 0 where pruned (importance_mix 1, no rate term)."""
    return {n: np.where(m, 1.0, 1e9) for n, m in masks.items()}


def coded(model, tensors, xte, yte, qp=-32, **options):
    """(test accuracy of the decoded model, bytes) for tensors coded at qp."""
    data = nnr.encode(tensors, qp=qp, **options)
    return accuracy(model, nnr.decode(data), xte, yte), len(data)


DENSE_QPS = (-32, -28, -24, -20, -16, -12)
GRID_QPS = (-32, -24, -20, -16)
DEFAULT = "importance, global (β = 0.9, the default)"


def run(seeds):
    import torch
    torch.set_num_threads(1)
    (xtr, ytr), (xc, yc), (xte, yte) = data()
    res = {}         # key -> list over seeds of a tuple of numbers

    def add(key, *values):
        res.setdefault(key, []).append(values)

    for seed in range(seeds):
        torch.manual_seed(seed)
        model = train(net(), xtr, ytr, epochs=40, seed=seed)
        base = state(model)
        imp = fisher(model, xc, yc)
        for qp in DENSE_QPS:
            add(("dense", qp), *coded(model, base, xte, yte, qp))
        for structured in (False, True):
            for method, kw in METHODS.items():
                for s in SPARSITIES:
                    sp = prune(base, imp, s, structured, kw)
                    add(("oneshot", structured, method, s), accuracy(model, sp, xte, yte),
                        *coded(model, sp, xte, yte))
            for s in SPARSITIES:
                coding_details(model, base, imp, s, structured, xte, yte, add)
        for s in (0.3, 0.5, 0.7):
            sp = prune(base, imp, s, False, METHODS[DEFAULT])
            for qp in GRID_QPS:
                add(("grid", s, qp), *coded(model, sp, xte, yte, qp))
        alt, alt_imp = rescaled(base, imp)
        add("rescaled dense", accuracy(model, alt, xte, yte))
        for method in RESCALED_METHODS:
            for s in SPARSITIES:
                add(("rescaled", method, s), accuracy(model, prune(alt, alt_imp, s, False, METHODS[method]), xte, yte))
        finetune_demo(model, base, imp, xtr, ytr, xte, yte, seed, add)
    return res


def coding_details(model, base, imp, s, structured, xte, yte, add):
    """Importance, global: row skipping off, the pinned trellis, masked zeros the trellis moved."""
    sp, masks = sparsify(base, s, structured=structured, importance=imp, exclude=[LAST] if structured else ())
    dec = nnr.decode(nnr.encode(sp, qp=-32))
    moved = sum(int(np.count_nonzero(dec[n][~m])) for n, m in masks.items())
    lost_rows = sum(int(np.count_nonzero(~m.reshape(m.shape[0], -1).any(1) & dec[n].reshape(m.shape[0], -1).any(1)))
                    for n, m in masks.items())
    pinned_acc, pinned_bytes = coded(model, sp, xte, yte, importance=pin(masks), importance_mix=1.0)
    add(("coding", structured, s), len(nnr.encode(sp, qp=-32, row_skipping=False)), pinned_bytes, pinned_acc,
        moved, sum(zeroed(m) for m in masks.values()), lost_rows, len(nnr.encode(kept_rows_only(sp, masks), qp=-32)))


FT_EPOCHS = 5
FT_CASES = ((False, 0.7), (False, 0.9), (True, 0.5), (True, 0.7))
FT_LABELS = {"one-shot": lambda f: {}, f"one-shot, then {FT_EPOCHS} epochs": lambda f: dict(finetune=f),
             f"3 steps, {FT_EPOCHS} epochs after each": lambda f: dict(finetune=f, steps=3)}


def finetune_demo(model, base, imp, xtr, ytr, xte, yte, seed, add):
    """Importance, global: one-shot, one-shot + fine-tuning, gradual (3 steps) with fine-tuning."""
    tuned = net()
    calls = []

    def finetune(tensors, masks):
        calls.append(1)
        load(tuned, tensors)
        train(tuned, xtr, ytr, epochs=FT_EPOCHS, seed=1000 * seed + len(calls), masks=masks)
        return {n: v.astype(tensors[n].dtype) for n, v in state(tuned).items()}

    for structured, s in FT_CASES:
        for label, kw in FT_LABELS.items():
            sp, _ = sparsify(base, s, structured=structured, importance=imp,
                             exclude=[LAST] if structured else (), **kw(finetune))
            add(("ft", structured, s, label), accuracy(model, sp, xte, yte), *coded(model, sp, xte, yte),
                *coded(model, sp, xte, yte, qp=-20))


def markdown(res, seeds):
    def m(key, i=0):
        return float(np.mean([v[i] for v in res[key]]))

    def cell(key, i=0):
        return f"{m(key, i):.3f} · {m(key, i + 1):,.0f}"

    def pct(x):
        return f"{x:.0%}"
    head = "| saliency, scope | " + " | ".join(pct(s) for s in SPARSITIES) + " |"
    rule = "|---|" + "---|" * len(SPARSITIES)
    lines = ["# Sparsification before coding: a CNN on scikit-learn's digits", "",
             "Produced by `python examples/sparsify_digits.py --markdown examples/sparsify_digits.md`. Model: "
             "conv 1→16, conv 16→32 (3x3, ReLU, max-pool), linear 128→64→10; 13,584 weights in four tensors "
             "(`0.weight`, `3.weight`, `7.weight`, `9.weight`), biases never pruned. Data: `load_digits`, split "
             "70/30 stratified (random_state 0): 1,257 training images (training, fine-tuning; the first 256 "
             "after a seeded shuffle are the calibration set of the importance, per-sample squared gradients "
             "of the cross-entropy summed), 540 test images for every accuracy here (disjoint from both). "
             "Sparsity is the fraction of the pruned tensors' weights set to zero.", ""]
    lines += [f"Cells: test accuracy of the decoded model · bytes of the stream (540 held-out images; means "
             f"over {seeds} training seeds; nnr.encode defaults: dq, row skipping).", "",
             "**dense, coarser QPs** (the baseline any pruning must beat at equal bytes)", "",
             "| qp | " + " | ".join(str(q) for q in DENSE_QPS) + " |", "|---|" + "---|" * len(DENSE_QPS),
             "| dense | " + " | ".join(cell(("dense", q)) for q in DENSE_QPS) + " |", ""]
    for structured in (False, True):
        title = ("structured: whole output rows (the classifier's rows excluded)" if structured
                 else "unstructured")
        lines += [f"**one-shot pruning, {title}, qp -32**", "", head, rule]
        for method in METHODS:
            lines.append(f"| {method} | " + " | ".join(cell(("oneshot", structured, method, s), 1)
                                                      for s in SPARSITIES) + " |")
        c = [("coding", structured, s) for s in SPARSITIES]
        lines.append("| default, bytes without row skipping | " + " | ".join(f"{m(k):,.0f}" for k in c) + " |")
        lines.append("| default, pinned trellis (importance 1e9 where pruned) | "
                     + " | ".join(f"{m(k, 2):.3f} · {m(k, 1):,.0f}" for k in c) + " |")
        lines.append("| default, pruned positions decoded ≠ 0 (plain stream) | "
                     + " | ".join(f"{m(k, 3):.0f} of {m(k, 4):,.0f}" for k in c) + " |")
        if structured:
            lines.append("| default, zero rows not skipped (plain stream) | "
                         + " | ".join(f"{m(k, 5):.1f}" for k in c) + " |")
            lines.append("| default, the kept rows alone (zero rows removed: a smaller model) | "
                         + " | ".join(f"{m(k, 6):,.0f}" for k in c) + " |")
        lines.append("")
    lines += ["**sparsity and QP together** (importance, global, unstructured)", "",
              "| sparsity | " + " | ".join(f"qp {q}" for q in GRID_QPS) + " |", "|---|" + "---|" * len(GRID_QPS),
              "| 0 | " + " | ".join(cell(("dense", q)) for q in GRID_QPS) + " |"]
    for s in (0.3, 0.5, 0.7):
        lines.append(f"| {pct(s)} | " + " | ".join(cell(("grid", s, q)) for q in GRID_QPS) + " |")
    lines += ["", f"**the same function, reparametrised** (fc1 x {RESCALE['7']:g}, fc2 x {RESCALE['9']:g}; "
              f"float accuracy, dense {m('rescaled dense'):.3f}), unstructured", "", head, rule]
    for method in RESCALED_METHODS:
        lines.append(f"| {method} | " + " | ".join(f"{m(('rescaled', method, s)):.3f}" for s in SPARSITIES) + " |")
    lines += ["", "**fine-tuning** (importance, global; masked Adam, lr 1e-3, on the 1,257 training images; "
              "qp -32 unless said)", "",
              "| | " + " | ".join(f"{'structured' if st else 'unstructured'} {pct(s)}" for st, s in FT_CASES) + " |",
              "|---|" + "---|" * len(FT_CASES)]
    for label in FT_LABELS:
        lines.append(f"| {label} | " + " | ".join(cell(("ft", st, s, label), 1) for st, s in FT_CASES) + " |")
    last = list(FT_LABELS)[-1]
    lines.append(f"| {last}, qp -20 | " + " | ".join(cell(("ft", st, s, last), 3) for st, s in FT_CASES) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    text = markdown(run(args.seeds), args.seeds)
    print(text)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
