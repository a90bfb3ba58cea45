"""A small CNN trained here on Fashion-MNIST (Debian's dataset-fashion-mnist): test accuracy.

The data come from `nnr.testenv.fashion_mnist` (`python -m nnr.testenv.fashion_mnist` fetches the
Debian package once into nnr's cache folder) and are read by the Flower example's loader. The trained
state_dict is cached in <nnr cache>/benchmarks/, keyed by a hash of the training configuration, so
only the first run trains.
"""
import hashlib
import json
import os
import time

import numpy as np

from benchmarks.rd.models.spec import ModelSpec, batched, float_tensors, loaded

# the training configuration; any change gives another cache key (ARCH names the network below)
FULL = dict(arch="cnn16-32-bn-fc128-v1", epochs=3, train_images=60000, batch=128, lr=2e-3, seed=0)
QUICK = dict(FULL, epochs=1, train_images=10000)
CALIBRATION_IMAGES = 1000


def make_net():
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),     # 28 -> 14
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),    # 14 -> 7
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def data():
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 28, 28) in [0, 1] and int64 labels."""
    from examples.flower_fashion_mnist import load_fashion_mnist
    return load_fashion_mnist()


def cache_path(cfg):
    from nnr.testenv.nncodec import cache_dir
    key = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "benchmarks", f"fmnist-{key}.pt")


def train(cfg, x, y, log=None):
    """The state_dict of make_net() trained with Adam on the first cfg['train_images'] of a seeded permutation."""
    import torch
    torch.manual_seed(cfg["seed"])
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    rng = np.random.default_rng([cfg["seed"], 1])
    idx = rng.permutation(len(y))[:cfg["train_images"]]
    xt, yt = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
    net.train()
    for epoch in range(cfg["epochs"]):
        order = torch.from_numpy(rng.permutation(len(idx)))
        for i in range(0, len(idx), cfg["batch"]):
            b = order[i:i + cfg["batch"]]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
        if log:
            log(f"  fmnist: epoch {epoch + 1}/{cfg['epochs']} trained")
    return net.eval().state_dict()


def trained_state(cfg, x, y, log=None):
    """The cached state_dict for cfg, trained (and cached, written atomically) on the first call."""
    import torch
    path = cache_path(cfg)
    if os.path.exists(path):
        return torch.load(path, map_location="cpu"), True
    sd = train(cfg, x, y, log)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(sd, tmp)
    os.replace(tmp, path)
    return sd, False


def load(quick=False, log=None, test_images=None):
    """The ModelSpec of the Fashion-MNIST CNN (trained on the first run, then read from the cache)."""
    import torch
    t0 = time.perf_counter()
    cfg = QUICK if quick else FULL
    xtr, ytr, xte, yte = data()
    sd, cached = trained_state(cfg, xtr, ytr, log)
    net = make_net()
    net.load_state_dict(sd)
    net.eval()
    n_test = test_images or (2000 if quick else len(yte))
    x_test, y_test = torch.from_numpy(xte[:n_test]), torch.from_numpy(yte[:n_test])
    cal_idx = np.random.default_rng([cfg["seed"], 2]).permutation(len(ytr))[:CALIBRATION_IMAGES]
    x_cal, y_cal = torch.from_numpy(xtr[cal_idx]), torch.from_numpy(ytr[cal_idx])

    def metric(decoded):
        with loaded(net, decoded):
            pred = batched(net, x_test, 1000).argmax(1)
        return float((pred == y_test).float().mean())

    def loss(output, i):            # cross-entropy on the calibration labels of batch i (a Fisher importance)
        return torch.nn.functional.cross_entropy(output, y_cal[i * 100:(i + 1) * 100], reduction="sum")

    tensors = float_tensors(sd)
    params = sum(v.size for v in tensors.values())
    what = "read from the cache" if cached else "trained now"
    return ModelSpec(
        name="fmnist", title=f"Fashion-MNIST CNN ({params / 1e3:.0f} k parameters)", module=net, tensors=tensors,
        metric=metric, calibration=[x_cal[i:i + 100] for i in range(0, CALIBRATION_IMAGES, 100)],
        higher_is_better=True, classifier=True, metric_name="test accuracy",
        data_note=(f"evaluation: {'the' if n_test == len(yte) else f'the first {n_test} of the'} 10,000 "
                   "Fashion-MNIST test images; calibration: "
                   f"{CALIBRATION_IMAGES} training images (a seeded draw from the 60,000; the network was trained "
                   f"on {cfg['train_images']} training images, {cfg['epochs']} epoch(s), Adam, {what}): the test "
                   "set is a separate file, disjoint by construction"),
        loss=loss, setup_s=time.perf_counter() - t0,
        # the accuracy moves between qp -8 and -24 (at -24 the float model's accuracy is reached)
        qps=list(range(-12, -43, -2)), budget_qps=tuple(range(-12, -41, -2)),
        few_budget_qps=(-14, -18, -22, -26, -30, -36))
