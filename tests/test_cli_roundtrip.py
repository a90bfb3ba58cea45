"""nnr_encode / nnr_decode round trips for .pt, .safetensors, .npz and .h5: names, shapes and dtypes
restored, integers exact; uniform quantization errs by at most half a step (Delta / 2 of the QP the
stream gives the tensor). With dependent quantization the trellis may trade one parameter's error for
the others', so the bound is 2 Delta."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.modelio import Model, load_model, save_model
from nnr_core.quant.reconstruct import step_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tool, *args):
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def model_tensors(fmt):
    rng = np.random.default_rng(3)
    t = {
        "conv1.weight": rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32),
        "conv1.bias": rng.normal(0, 0.01, (8,)).astype(np.float32),
        "fc.weight": rng.normal(0, 0.05, (10, 32)).astype(np.float16),
        "emb.idx": rng.integers(-100, 100, (20,)).astype(np.int64),
        "mask": rng.random((4, 4)) < 0.5,
        "counts": rng.integers(0, 255, (3, 5)).astype(np.uint8),
    }
    if fmt == "pt":
        t["bn.num_batches_tracked"] = np.array(7, dtype=np.int64)
    if fmt == "safetensors":
        t["scale"] = rng.normal(0, 1, (16,)).astype(np.float32)
    return t


FORMATS = ["npz", "pt", "safetensors", "h5"]
NEEDS = {"pt": "torch", "safetensors": "safetensors", "h5": "h5py"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dq", [True, False])
def test_roundtrip(tmp_path, fmt, dq):
    if fmt in NEEDS:
        pytest.importorskip(NEEDS[fmt], reason=f".{fmt} round trip needs {NEEDS[fmt]}")
    tensors = model_tensors(fmt)
    src = tmp_path / f"model.{fmt}"
    if fmt == "pt":
        import torch
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()}, src)
    else:
        save_model(src, Model(dict(tensors), {k: str(v.dtype) for k, v in tensors.items()}, fmt))
    original = load_model(src)
    bs = tmp_path / "model.nnr"
    r = run("nnr_encode", src, "-o", bs, *([] if dq else ["--no-dq"]))
    assert r.returncode == 0, r.stderr
    assert "bits per parameter" in r.stdout and "ratio" in r.stdout
    out = tmp_path / f"restored.{fmt}"
    r = run("nnr_decode", bs, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    qps = {t.name: t.qp for t in nnr.Decoder().decode_tensors(bs.read_bytes())}
    restored = load_model(out)
    assert list(restored.tensors) == list(original.tensors)
    assert restored.dtypes == original.dtypes
    for name, a in original.tensors.items():
        b = restored.tensors[name]
        assert b.shape == a.shape, name
        if original.dtypes[name] not in ("float32", "float16", "bfloat16", "float64"):
            assert np.array_equal(a, b), name                  # integers and bools: lossless
            continue
        qp = qps[name]                     # nnr_encode's default: the QP meeting --quality per tensor
        assert qp == -75 if a.ndim == 1 else qp > -75, (name, qp)
        bound = step_size(qp, 2) * (2 if dq else 0.5)
        slack = 0.0
        if original.dtypes[name] == "float16":
            slack = float(np.abs(a).max()) * 2.0 ** -11      # the float16 rounding of the result
        err = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
        assert err <= bound + slack, f"{name}: error {err} > {bound} + {slack}"


def test_encode_failure_leaves_no_output(tmp_path):
    src = tmp_path / "bad.npz"
    np.savez(src, w=np.array([[1.0, np.nan]], dtype=np.float32))
    out = tmp_path / "bad.nnr"
    r = run("nnr_encode", src, "-o", out)
    assert r.returncode == 1 and "non-finite" in r.stderr and "'w'" in r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_encode_matches_library_for_plain_float32(tmp_path):
    rng = np.random.default_rng(1)
    t = {"a.weight": rng.normal(0, 0.05, (32, 16)).astype(np.float32), "a.bias": rng.normal(0, 0.05, (32,)).astype(np.float32)}
    src = tmp_path / "m.npz"
    np.savez(src, **t)
    out = tmp_path / "m.nnr"
    assert run("nnr_encode", src, "-o", out, "-q", "--qp", "-32").returncode == 0
    assert out.read_bytes() == nnr.encode(t)      # nothing recorded: reference-identical bytes
