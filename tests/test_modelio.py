"""nnr.modelio (model file input/output) and nnr.progress.

Tests that need torch, safetensors or h5py skip with a visible reason when the package is absent
(CI installs them: see the `test` extra and torch==2.13.0).
"""
import io
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from nnr.errors import EncoderConfigError, UnsupportedFeatureError
from nnr.modelio import Model, load_model, save_model
from nnr.modelio.dtypes import bf16_bits_to_f32, f32_to_bf16_bits
from nnr.progress import Progress, format_bytes, progress


def _need(module):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install nnr[all])")


def _arrays(rng=None):
    """One tensor per numpy-representable dtype the codec accepts, including a 0-d one."""
    rng = rng or np.random.default_rng(7)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float16),
        "q.int8": rng.integers(-128, 128, (5, 6)).astype(np.int8),
        "steps": np.array(12345678901, dtype=np.int64),
        "lut": rng.integers(0, 256, 17).astype(np.uint8),
        "mask": rng.random((3, 4)) > 0.5,
        "i16": rng.integers(-2 ** 15, 2 ** 15, 7).astype(np.int16),
        "i32": rng.integers(-2 ** 31, 2 ** 31, 7).astype(np.int32),
        "u16": rng.integers(0, 2 ** 16, 7).astype(np.uint16),
        "u32": rng.integers(0, 2 ** 32, 7).astype(np.uint32),
        "scale": np.array(0.125, dtype=np.float32),
    }


def _assert_same_models(a, b):
    assert list(a.tensors) == list(b.tensors)
    assert a.dtypes == b.dtypes
    for name in a.tensors:
        x, y = a.tensors[name], b.tensors[name]
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def _round_trip(path, model=None, **load_kw):
    first = load_model(path, **load_kw) if model is None else model
    out = path.with_name("out" + path.suffix)
    save_model(out, first)
    second = load_model(out, **load_kw)
    _assert_same_models(first, second)
    return first, second, out


def _codec_view(arrays):
    """What the codec must see for `arrays`: float32 for floats, uint8 for bool, ints as is."""
    view = {}
    for name, a in arrays.items():
        view[name] = (a.astype(np.float32) if a.dtype.kind == "f"
                      else a.astype(np.uint8) if a.dtype == bool else a)
    return view


# ---------------------------------------------------------------------------------------- npz

def _write_npz(path, arrays):
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        for name, a in arrays.items():
            with zf.open(name + ".npy", "w") as m:
                np.lib.format.write_array(m, a)


def test_npz_round_trip(tmp_path):
    arrays = _arrays()
    arrays["file"] = np.arange(3, dtype=np.int32)  # would clash with np.savez's own argument
    path = tmp_path / "m.npz"
    _write_npz(path, arrays)
    model, _, out = _round_trip(path)
    assert model.fmt == "npz"
    assert list(model.tensors) == list(arrays)
    assert model.dtypes == {n: a.dtype.name for n, a in arrays.items()}
    for name, expected in _codec_view(arrays).items():
        assert model.tensors[name].dtype == expected.dtype
        np.testing.assert_array_equal(model.tensors[name], expected)
    with np.load(out) as written:
        for name, a in arrays.items():
            assert written[name].dtype == a.dtype and written[name].shape == a.shape
            np.testing.assert_array_equal(written[name], a)


def test_npz_compression_is_kept(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, w=np.zeros((64, 64), np.float32))
    model = load_model(path)
    assert model.extras["compressed"] is True
    save_model(tmp_path / "c2.npz", model)
    assert os.path.getsize(tmp_path / "c2.npz") < 64 * 64 * 4 // 4


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, good=np.ones(2, np.float32), bad=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(EncoderConfigError, match="'bad'"):
        load_model(path)


def test_complex_dtype_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, z=np.ones(3, np.complex64))
    with pytest.raises(EncoderConfigError, match=r"'z'.*complex64"):
        load_model(path)


def test_string_dtype_is_refused(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, names=np.array(["a", "b"]))
    with pytest.raises(EncoderConfigError, match="'names'"):
        load_model(path)


def test_float64_needs_allow_float64(tmp_path):
    path = tmp_path / "d.npz"
    values = np.array([1.0, 1 / 3, -2.5e-7])
    np.savez(path, w=values)
    with pytest.raises(EncoderConfigError, match=r"'w'.*float64.*allow_float64"):
        load_model(path)
    model = load_model(path, allow_float64=True)
    assert model.dtypes["w"] == "float64" and model.tensors["w"].dtype == np.float32
    save_model(tmp_path / "d2.npz", model)
    with np.load(tmp_path / "d2.npz") as written:
        assert written["w"].dtype == np.float64
        np.testing.assert_array_equal(written["w"], values.astype(np.float32).astype(np.float64))


def test_big_endian_arrays_become_native(tmp_path):
    path = tmp_path / "be.npz"
    _write_npz(path, {"w": np.arange(4, dtype=">f4"), "i": np.arange(3, dtype=">i8")})
    model = load_model(path)
    assert model.tensors["w"].dtype == np.dtype("<f4") and model.dtypes["w"] == "float32"
    assert model.tensors["i"].dtype == np.dtype("<i8") and model.dtypes["i"] == "int64"


# ------------------------------------------------------------------- errors, dispatch, saving

def test_unknown_extension(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(EncoderConfigError, match=r"\.onnx.*fmt="):
        load_model(path)
    with pytest.raises(EncoderConfigError, match="unknown model format"):
        load_model(path, fmt="onnx")


def test_fmt_overrides_the_extension(tmp_path):
    path = tmp_path / "weights.bin"
    with open(path, "wb") as f:
        np.savez(f, w=np.ones(3, np.float32))
    model = load_model(path, fmt="npz")
    assert model.fmt == "npz" and list(model.tensors) == ["w"]
    save_model(tmp_path / "again.bin", model)  # falls back to model.fmt
    assert list(load_model(tmp_path / "again.bin", fmt="npz").tensors) == ["w"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_model(tmp_path / "nope.npz")


def test_corrupt_file_is_an_encoder_config_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(EncoderConfigError):
        load_model(path)


def test_save_restores_and_checks_integer_ranges(tmp_path):
    model = Model({"q": np.array([1, 300], np.int32)}, {"q": "int8"}, "npz", {})
    with pytest.raises(EncoderConfigError, match=r"'q'.*int8"):
        save_model(tmp_path / "q.npz", model)
    model = Model({"m": np.array([0, 2], np.int32)}, {"m": "bool"}, "npz", {})
    with pytest.raises(EncoderConfigError, match="'m'.*bool"):
        save_model(tmp_path / "m.npz", model)
    model = Model({"q": np.array([1.0, 2.5], np.float32)}, {"q": "int16"}, "npz", {})
    with pytest.raises(EncoderConfigError, match="non-integer"):
        save_model(tmp_path / "q.npz", model)
    # decoded integer tensors (int32 from the decoder) go back to their dtype
    model = Model({"q": np.array([-5, 7], np.int32), "m": np.array([1, 0], np.int32)},
                  {"q": "int8", "m": "bool"}, "npz", {})
    save_model(tmp_path / "ok.npz", model)
    with np.load(tmp_path / "ok.npz") as written:
        assert written["q"].dtype == np.int8 and written["m"].dtype == bool


def test_save_is_atomic(tmp_path):
    target = tmp_path / "m.npz"
    target.write_bytes(b"previous contents")
    model = Model({"ok": np.ones(1000, np.float32), "bad": np.array([999], np.int32)},
                  {"ok": "float32", "bad": "int8"}, "npz", {})
    with pytest.raises(EncoderConfigError):
        save_model(target, model)
    assert target.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_save_refuses_non_arrays(tmp_path):
    with pytest.raises(EncoderConfigError, match="'w'"):
        save_model(tmp_path / "m.npz", Model({"w": [1.0, 2.0]}, {}, "npz", {}))


def test_importing_modelio_imports_no_optional_package():
    code = ("import sys, nnr.modelio, nnr.progress; "
            "print([m for m in ('torch', 'h5py', 'safetensors') if sys.modules.get(m) is not None])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("blocked, suffix, action, extra", [
    ("safetensors", ".safetensors", "reading", "safetensors"),
    ("torch", ".pt", "reading", "torch"),
    ("h5py", ".h5", "reading", "h5"),
    ("safetensors", ".safetensors", "writing", "safetensors"),
    ("torch", ".pth", "writing", "torch"),
    ("h5py", ".h5", "writing", "h5"),
])
def test_missing_optional_package(tmp_path, monkeypatch, blocked, suffix, action, extra):
    path = tmp_path / ("m" + suffix)
    path.write_bytes(b"\0" * 16)
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    fmt = suffix.lstrip(".").replace("pth", "pt")
    message = f"{action} .{fmt} needs the '{blocked}' package: pip install nnr[{extra}]"
    with pytest.raises(UnsupportedFeatureError) as info:
        if action == "reading":
            load_model(path)
        else:
            save_model(path, Model({"w": np.ones(2, np.float32)}, {"w": "float32"}, fmt, {}))
    assert str(info.value) == message
    assert isinstance(info.value, NotImplementedError)


# -------------------------------------------------------------------------------- bfloat16

def test_bfloat16_rounding_matches_torch():
    torch = _need("torch")
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.standard_normal(10000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10000),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, 1e-45, -1e-40,
                  1.00390625, 1.01171875, -1.00390625], np.float32)])  # ties round to even
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = f32_to_bf16_bits(values)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(got[finite], expected[finite])
    assert np.all(np.isnan(bf16_bits_to_f32(got[~finite])))
    assert f32_to_bf16_bits(np.float32(1.5)).shape == ()


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_with_metadata(tmp_path):
    _need("safetensors")
    from safetensors.numpy import save_file
    arrays = _arrays()
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path), metadata={"format": "np", "note": "nnr test"})
    model, second, out = _round_trip(path)
    assert model.fmt == "safetensors"
    assert model.extras["metadata"] == {"format": "np", "note": "nnr test"}
    assert second.extras["metadata"] == model.extras["metadata"]
    assert sorted(model.tensors) == sorted(arrays)
    assert model.dtypes == {n: arrays[n].dtype.name for n in model.tensors}
    for name, expected in _codec_view(arrays).items():
        np.testing.assert_array_equal(model.tensors[name], expected)
        assert model.tensors[name].shape == arrays[name].shape
    from safetensors.numpy import load_file
    written = load_file(str(out))
    for name, a in arrays.items():
        assert written[name].dtype == a.dtype
        np.testing.assert_array_equal(written[name], a)


def test_safetensors_bfloat16_with_torch(tmp_path):
    torch = _need("torch")
    _need("safetensors")
    from safetensors.torch import load_file, save_file
    original = {"emb": torch.randn(5, 3).to(torch.bfloat16), "b": torch.tensor(2.5, dtype=torch.bfloat16),
                "ids": torch.arange(4), "m": torch.tensor([True, False])}
    path = tmp_path / "bf.safetensors"
    save_file(original, str(path), metadata={"format": "pt"})
    model, _, out = _round_trip(path)
    assert model.dtypes["emb"] == "bfloat16" and model.tensors["emb"].dtype == np.float32
    np.testing.assert_array_equal(model.tensors["emb"], original["emb"].float().numpy())
    written = load_file(str(out))
    for name, t in original.items():
        assert written[name].dtype == t.dtype and written[name].shape == t.shape
        assert torch.equal(written[name], t)
    assert out.read_bytes() == path.read_bytes()  # same layout as safetensors itself writes


def test_safetensors_bfloat16_without_torch(tmp_path, monkeypatch):
    _need("safetensors")
    bits = f32_to_bf16_bits(np.array([[1.0, -2.5], [3.140625, 1e-3]], np.float32))
    model = Model({"w": bf16_bits_to_f32(bits), "i": np.arange(3, dtype=np.int16)},
                  {"w": "bfloat16", "i": "int16"}, "safetensors", {"metadata": {"k": "v"}})
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "nt.safetensors"
    save_model(path, model)
    again = load_model(path)
    _assert_same_models(model, again)
    assert again.extras["metadata"] == {"k": "v"}
    monkeypatch.undo()
    if "torch" not in sys.modules:
        pytest.importorskip("torch", reason="torch not installed: BF16 checked through nnr only")
    import torch
    from safetensors.torch import load_file
    written = load_file(str(path))
    assert written["w"].dtype == torch.bfloat16
    np.testing.assert_array_equal(written["w"].float().numpy(), model.tensors["w"])


def test_safetensors_reads_each_tensor_once(tmp_path, monkeypatch):
    safetensors = _need("safetensors")
    from safetensors.numpy import save_file
    arrays = _arrays()
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path))
    calls = []
    real = safetensors.safe_open

    class Counting:
        def __init__(self, *a, **k):
            self.inner = real(*a, **k)

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, name):
            calls.append(name)
            return self.f.get_tensor(name)

    monkeypatch.setattr(safetensors, "safe_open", Counting)
    model = load_model(path)
    assert sorted(calls) == sorted(arrays) == sorted(model.tensors)


def test_safetensors_not_a_safetensors_file(tmp_path):
    _need("safetensors")
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(EncoderConfigError):
        load_model(path)


# ------------------------------------------------------------------------------------- HDF5

def _keras_h5(path, h5py):
    """The layout Keras 2 writes for model.save("x.h5"): weights under model_weights/<layer>/<layer>/."""
    rng = np.random.default_rng(11)
    layers = {"dense": [("kernel:0", rng.standard_normal((8, 4)).astype(np.float32)),
                        ("bias:0", rng.standard_normal(4).astype(np.float32))],
              "batch_normalization": [("gamma:0", np.ones(4, np.float16)),
                                      ("moving_mean:0", np.zeros(4, np.float16))],
              "dense_1": [("kernel:0", rng.standard_normal((4, 2)).astype(np.float32)),
                          ("bias:0", np.zeros(2, np.float32))]}
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["model_config"] = '{"class_name": "Sequential"}'
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n in layers])
        mw.attrs["backend"] = b"tensorflow"
        for layer, weights in layers.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = np.array([f"{layer}/{w}".encode() for w, _ in weights])
            for w, value in weights:
                g.create_dataset(f"{layer}/{w}", data=value)
        opt = f.create_group("optimizer_weights")
        opt.create_dataset("Adam/iter:0", data=np.int64(42))
        opt.create_dataset("Adam/flags", data=np.array([True, False, True]))
        opt.create_dataset("Adam/q", data=np.arange(6, dtype=np.int8).reshape(2, 3),
                           chunks=(1, 3), compression="gzip", compression_opts=4)
        opt["latest"] = h5py.SoftLink("/optimizer_weights/Adam")
    return layers


def _h5_tree(h5py, path):
    tree = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            kind = "group" if isinstance(obj, h5py.Group) else f"dataset {obj.dtype} {obj.shape}"
            attrs = {k: (obj.attrs.get_id(k).dtype, np.asarray(obj.attrs[k]).tolist()) for k in obj.attrs}
            tree[name] = (kind, attrs)
        f.visititems(visit)
        tree["/"] = ("root", {k: (f.attrs.get_id(k).dtype, np.asarray(f.attrs[k]).tolist())
                              for k in f.attrs})
    return tree


def test_h5_keras_layout_round_trip(tmp_path):
    h5py = _need("h5py")
    path = tmp_path / "model.h5"
    layers = _keras_h5(path, h5py)
    model, _, out = _round_trip(path)
    assert model.fmt == "h5"
    assert "model_weights/dense/dense/kernel:0" in model.tensors
    assert model.dtypes["model_weights/batch_normalization/batch_normalization/gamma:0"] == "float16"
    assert model.dtypes["optimizer_weights/Adam/iter:0"] == "int64"
    assert model.tensors["optimizer_weights/Adam/iter:0"].shape == ()
    assert model.dtypes["optimizer_weights/Adam/flags"] == "bool"
    for layer, weights in layers.items():
        for w, value in weights:
            got = model.tensors[f"model_weights/{layer}/{layer}/{w}"]
            np.testing.assert_array_equal(got, value.astype(np.float32))
    assert _h5_tree(h5py, out) == _h5_tree(h5py, path)
    with h5py.File(out, "r") as f:
        q = f["optimizer_weights/Adam/q"]
        assert q.chunks == (1, 3) and q.compression == "gzip" and q.compression_opts == 4
        assert f.get("optimizer_weights/latest", getlink=True).path == "/optimizer_weights/Adam"
        assert list(f["model_weights"].attrs["layer_names"]) == [b"dense", b"batch_normalization", b"dense_1"]


def test_h5_keeps_creation_order(tmp_path):
    h5py = _need("h5py")
    path = tmp_path / "ordered.h5"
    with h5py.File(path, "w", track_order=True) as f:
        for name in ("z", "a", "m"):
            f.create_dataset(name, data=np.ones(2, np.float32))
    model, _, out = _round_trip(path)
    assert list(model.tensors) == ["z", "a", "m"]


def test_h5_string_dataset_is_refused(tmp_path):
    h5py = _need("h5py")
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.ones(2, np.float32))
        f.create_dataset("meta/names", data=np.array([b"a", b"b"]))
    with pytest.raises(EncoderConfigError, match="'meta/names'"):
        load_model(path)


# ------------------------------------------------------------------------------------ torch

def _torch_tensors(torch):
    g = torch.Generator().manual_seed(5)
    return {
        "fc.weight": torch.randn(6, 4, generator=g),
        "fc.bias": torch.randn(6, generator=g).to(torch.float16),
        "emb.weight": torch.randn(10, 3, generator=g).to(torch.bfloat16),
        "q.weight": torch.randint(-128, 128, (3, 3), generator=g, dtype=torch.int8),
        "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
        "lut": torch.randint(0, 256, (9,), generator=g, dtype=torch.uint8),
        "mask": torch.rand(2, 5, generator=g) > 0.5,
        "i16": torch.randint(-2 ** 15, 2 ** 15, (4,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-2 ** 31, 2 ** 31, (4,), generator=g, dtype=torch.int32),
        "u16": torch.randint(0, 2 ** 16, (4,), generator=g, dtype=torch.int32).to(torch.uint16),
    }


def _assert_same_torch(a, b, torch):
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_torch_state_dict_round_trip(tmp_path):
    torch = _need("torch")
    original = _torch_tensors(torch)
    path = tmp_path / "sd.pt"
    torch.save(original, path)
    model, _, out = _round_trip(path)
    assert model.fmt == "pt" and model.extras["layout"] == "state_dict"
    assert model.dtypes == {"fc.weight": "float32", "fc.bias": "float16", "emb.weight": "bfloat16",
                            "q.weight": "int8", "bn.num_batches_tracked": "int64", "lut": "uint8",
                            "mask": "bool", "i16": "int16", "i32": "int32", "u16": "uint16"}
    assert model.tensors["emb.weight"].dtype == np.float32
    assert model.tensors["mask"].dtype == np.uint8
    assert model.tensors["bn.num_batches_tracked"].shape == ()
    _assert_same_torch(original, torch.load(out, weights_only=True), torch)


def test_torch_checkpoint_round_trip_with_extras(tmp_path):
    torch = _need("torch")
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(8, 4)).sum().backward()
    opt.step()
    ckpt = {"epoch": 7, "optimizer_name": "sgd", "state_dict": net.state_dict(),
            "optimizer": opt.state_dict(), "best_acc": 0.913}
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    model, second, out = _round_trip(path)
    assert model.extras["layout"] == "checkpoint" and model.extras["key"] == "state_dict"
    assert list(model.tensors) == list(net.state_dict())
    assert second.extras["checkpoint"]["epoch"] == 7
    back = torch.load(out, weights_only=True)
    assert list(back) == list(ckpt)
    assert back["epoch"] == 7 and back["optimizer_name"] == "sgd" and back["best_acc"] == 0.913
    _assert_same_torch(ckpt["state_dict"], back["state_dict"], torch)
    assert back["state_dict"]._metadata == ckpt["state_dict"]._metadata
    assert back["optimizer"]["param_groups"] == ckpt["optimizer"]["param_groups"]
    for k, state in ckpt["optimizer"]["state"].items():
        assert torch.equal(back["optimizer"]["state"][k]["momentum_buffer"], state["momentum_buffer"])
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    fresh.load_state_dict(back["state_dict"])


@pytest.mark.parametrize("key", ["model_state_dict", "model"])
def test_torch_checkpoint_other_weight_keys(tmp_path, key):
    torch = _need("torch")
    path = tmp_path / "ckpt.pt"
    torch.save({key: {"w": torch.ones(2, 2)}, "step": 3}, path)
    model = load_model(path)
    assert model.extras["key"] == key and list(model.tensors) == ["w"]


def test_torch_state_dict_with_non_tensor_entries(tmp_path):
    torch = _need("torch")
    path = tmp_path / "mixed.pt"
    torch.save({"a": torch.ones(2), "version": 3, "b": torch.zeros(1, dtype=torch.int32)}, path)
    model, _, out = _round_trip(path)
    assert list(model.tensors) == ["a", "b"]
    back = torch.load(out, weights_only=True)
    assert list(back) == ["a", "version", "b"] and back["version"] == 3


def test_torch_whole_module_needs_allow_pickle(tmp_path):
    torch = _need("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    path = tmp_path / "net.pt"
    torch.save(net, path)
    with pytest.raises(EncoderConfigError, match=r"allow_pickle=True.*trust"):
        load_model(path)
    model, _, out = _round_trip(path, allow_pickle=True)
    assert model.extras["layout"] == "module"
    assert list(model.tensors) == list(net.state_dict())
    back = torch.load(out, weights_only=False)
    assert isinstance(back, torch.nn.Sequential)
    _assert_same_torch(net.state_dict(), back.state_dict(), torch)


def test_torch_checkpoint_holding_a_module(tmp_path):
    torch = _need("torch")
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "ck.pt"
    torch.save({"model": net, "epoch": 1}, path)
    with pytest.raises(EncoderConfigError, match="allow_pickle"):
        load_model(path)
    model, _, out = _round_trip(path, allow_pickle=True)
    back = torch.load(out, weights_only=False)
    assert back["epoch"] == 1 and isinstance(back["model"], torch.nn.Linear)
    _assert_same_torch(net.state_dict(), back["model"].state_dict(), torch)


def test_torch_complex_tensor_is_refused(tmp_path):
    torch = _need("torch")
    path = tmp_path / "c.pt"
    torch.save({"ok": torch.ones(2), "z": torch.ones(2, dtype=torch.complex64)}, path)
    with pytest.raises(EncoderConfigError, match="'z'"):
        load_model(path)


def test_torch_float64_needs_allow_float64(tmp_path):
    torch = _need("torch")
    path = tmp_path / "d.pt"
    torch.save({"w": torch.tensor([0.1, 0.2], dtype=torch.float64)}, path)
    with pytest.raises(EncoderConfigError, match="'w'.*float64"):
        load_model(path)
    model, _, out = _round_trip(path, allow_float64=True)
    assert torch.load(out, weights_only=True)["w"].dtype == torch.float64


def test_torch_file_without_tensors(tmp_path):
    torch = _need("torch")
    path = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(EncoderConfigError, match="no tensors"):
        load_model(path)


def test_torch_garbage_file(tmp_path):
    _need("torch")
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"garbage!" * 20)
    with pytest.raises(EncoderConfigError, match="garbage.pt"):
        load_model(path)


def test_cross_format_save_pt_to_npz_and_safetensors(tmp_path, caplog):
    torch = _need("torch")
    _need("safetensors")
    original = _torch_tensors(torch)
    torch.save({"state_dict": original, "epoch": 1}, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    save_model(tmp_path / "m.safetensors", model)
    st = load_model(tmp_path / "m.safetensors")
    assert st.dtypes == model.dtypes and st.extras["metadata"] is None
    with caplog.at_level(logging.WARNING, logger="nnr"):
        save_model(tmp_path / "m.npz", model)
    assert "bfloat16" in caplog.text
    npz = load_model(tmp_path / "m.npz")
    assert npz.dtypes["emb.weight"] == "float32"  # npz has no bfloat16: widened, exact
    np.testing.assert_array_equal(npz.tensors["emb.weight"], model.tensors["emb.weight"])


# --------------------------------------------------------------------------------- progress

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_silent_on_a_pipe_unless_forced():
    stream = io.StringIO()
    with Progress(3, label="encode", stream=stream) as bar:
        bar.update(item="a")
    assert stream.getvalue() == "" and not bar.enabled
    stream = io.StringIO()
    with Progress(2, label="encode", stream=stream, force=True) as bar:
        bar.update(item="fc.weight", postfix=f"bytes {format_bytes(1234567)} ratio 6.1x")
        bar.update(item="fc.bias")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("encode [") and "1/2" in lines[0]
    assert lines[0].endswith("fc.weight bytes 1.2 MB ratio 6.1x")
    assert "2/2" in lines[1] and "####################" in lines[1]


def test_progress_quiet_wins_over_force_and_tty(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    stream = _Tty()
    with Progress(2, stream=stream, force=True, quiet=True) as bar:
        bar.update()
    assert stream.getvalue() == ""


def test_progress_redraws_in_place_on_a_tty(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    stream = _Tty()
    assert list(progress(["a", "b", "c"], label="x", stream=stream)) == ["a", "b", "c"]
    text = stream.getvalue()
    assert text.startswith("\rx [") and text.endswith("\n") and text.count("\n") == 1
    assert "3/3" in text


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 999, 1000, 1234567, 5 * 10 ** 12)] == \
        ["0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 TB"]
