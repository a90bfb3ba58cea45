"""Already-quantized models (issue 15 item 5): PyTorch quantized tensors in a .pt file round-trip
exactly through nnr_encode / nnr_decode (integer representation as NNR_PT_INT, the affine quantizer in
the file meta); DecodedTensor.integer() hands out levels and step."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nnr
from nnr import filemeta
from nnr.errors import EncoderConfigError, SyntaxValueError, UnsupportedFeatureError
from nnr_core.quant.reconstruct import step_size
from nnr_core.syntax.constants import NNR_PT_INT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tool, *args):
    return subprocess.run([sys.executable, "-W", "ignore", "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def torch():
    t = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
    return t


def _quantized_state_dict(torch):
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.quantize_per_tensor(torch.randn(8, 5, generator=g), 0.0123, 3, torch.qint8),
        "b": torch.quantize_per_channel(torch.randn(4, 6, generator=g),
                                        torch.tensor([0.1, 0.02, 0.3, 0.04], dtype=torch.float64),
                                        torch.tensor([0, 1, -2, 0]), 0, torch.qint8),
        "c": torch.quantize_per_tensor(torch.rand(10, generator=g) * 5, 0.05, 10, torch.quint8),
        "d": torch.quantize_per_channel(torch.randn(3, 4, generator=g) * 100, torch.tensor([0.5, 0.25, 1.5, 3.0],
                                        dtype=torch.float64), torch.tensor([0, 0, 0, 0]), 1, torch.qint32),
        "w": torch.randn(6, 6, generator=g),
    }


def test_pt_round_trip_is_exact(tmp_path, torch):
    sd = _quantized_state_dict(torch)
    torch.save(sd, tmp_path / "q.pt")
    r = _run("nnr_encode", tmp_path / "q.pt", "-o", tmp_path / "q.nnr")
    assert r.returncode == 0, r.stderr
    dec = nnr.Decoder()
    dec.decode(tmp_path.joinpath("q.nnr").read_bytes())
    assert {t.name: t.payload_type for t in dec.tensors if t.name in "abcd"} == dict.fromkeys("abcd", NNR_PT_INT)
    r = _run("nnr_decode", tmp_path / "q.nnr", "-o", tmp_path / "out.pt", "-q")
    assert r.returncode == 0, r.stderr
    out = torch.load(tmp_path / "out.pt")
    assert list(out) == list(sd)
    for k in "abcd":
        assert out[k].dtype == sd[k].dtype and out[k].qscheme() == sd[k].qscheme()
        assert torch.equal(out[k].int_repr(), sd[k].int_repr())
        assert torch.equal(out[k].dequantize(), sd[k].dequantize())
    assert out["b"].q_per_channel_axis() == 0 and out["d"].q_per_channel_axis() == 1
    assert torch.equal(out["b"].q_per_channel_zero_points(), sd["b"].q_per_channel_zero_points())
    r = _run("nnr_decode", tmp_path / "q.nnr", "-o", tmp_path / "out.npz", "-q")
    with np.load(tmp_path / "out.npz") as z:
        assert (z["a"].dtype, z["c"].dtype, z["d"].dtype) == (np.int8, np.uint8, np.int32)
        assert np.array_equal(z["b"], sd["b"].int_repr().numpy())


def test_unsupported_quantizer_and_the_api(tmp_path, torch):
    x = torch.quantize_per_channel(torch.randn(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0.5, 1.0]), 0,
                                   torch.quint8)          # float zero points
    torch.save({"x": x}, tmp_path / "f.pt")
    r = _run("nnr_encode", tmp_path / "f.pt", "-o", tmp_path / "f.nnr")
    assert r.returncode == 1 and "per-tensor and per-channel affine" in r.stderr
    assert not (tmp_path / "f.nnr").exists()
    with pytest.raises(EncoderConfigError, match="quantized torch tensor; pass its int_repr"):
        nnr.encode({"x": torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8)})


@pytest.mark.parametrize("quantized, match", [
    ({"a": 3}, "is a JSON int"),
    ({"a": {"qscheme": "per_tensor_symmetric", "dtype": "qint8", "scale": 1.0, "zero_point": 0}}, "qscheme"),
    ({"a": {"qscheme": "per_tensor_affine", "dtype": "qint8", "scale": "1", "zero_point": 0}}, "do not describe"),
    ({"a": {"qscheme": "per_channel_affine", "dtype": "qint8", "scale": [1.0], "zero_point": [0, 1], "axis": 0}},
     "do not describe"),
])
def test_file_meta_quantizers_are_checked(quantized, match):
    with pytest.raises(SyntaxValueError, match=match):
        filemeta.parse(json.dumps({"nnr_file_meta": {"quantized": quantized}}))


def test_integer_levels_and_step():
    rng = np.random.default_rng(0)
    t = {"w": rng.normal(0, 0.1, (8, 8)).astype(np.float32), "i": np.arange(5, dtype=np.int32) * 1000,
         "big": rng.normal(0, 100, (4, 4)).astype(np.float32)}
    dec = nnr.Decoder()
    out = {x.name: x for x in dec.decode_tensors(nnr.encode(t, dq=False, qp=-30))}
    levels, step = out["w"].integer()
    assert levels.dtype == np.int8 and step == step_size(-30, 2) == 6 * 2 ** -10    # mul 6, shift -8
    assert np.array_equal(levels.astype(np.float32) * np.float32(step), out["w"].values)
    assert out["i"].integer()[0].dtype == np.int16 and out["i"].integer()[1] == 1.0
    assert out["big"].integer()[0].dtype == np.int32          # levels beyond ±32767 at this step
    dq = nnr.Decoder().decode_tensors(nnr.encode(t))
    with pytest.raises(UnsupportedFeatureError, match="dependent quantization"):
        dq[0].integer()
    plain = nnr.Decoder(keep_state=False).decode_tensors(nnr.encode(t, dq=False))
    with pytest.raises(UnsupportedFeatureError, match="levels were not kept"):
        plain[0].integer()


def _static_quantized(torch, seed):
    torch.manual_seed(seed)
    nn = torch.nn

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = torch.ao.quantization.QuantStub()
            self.m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
            self.dq = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dq(self.m(self.q(x)))
    w = Wrapped().eval()
    w.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    p = torch.ao.quantization.prepare(w)
    p(torch.randn(16, 3, 8, 8))
    return torch.ao.quantization.convert(p)


def _dynamic_quantized(torch, seed):
    torch.manual_seed(seed)
    nn = torch.nn
    m = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3, bias=False))
    return torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)


@pytest.mark.parametrize("make, shape", [(_static_quantized, (5, 3, 8, 8)), (_dynamic_quantized, (4, 16))])
def test_quantized_modules_round_trip_exactly(tmp_path, torch, make, shape):
    """A quantized model's state_dict (packed Linear parameters, quantizers, module versions) through
    nnr_encode / nnr_decode loads into a fresh copy of the model, which computes the same outputs."""
    model = make(torch, 0)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    r = _run("nnr_encode", tmp_path / "m.pt", "-o", tmp_path / "m.nnr", "-q")
    assert r.returncode == 0, r.stderr
    r = _run("nnr_decode", tmp_path / "m.nnr", "-o", tmp_path / "out.pt", "-q")
    assert r.returncode == 0, r.stderr
    fresh = make(torch, 1)
    fresh.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=False))
    x = torch.randn(*shape)
    assert torch.equal(fresh(x), model(x))
    assert len(tmp_path.joinpath("m.nnr").read_bytes()) < os.path.getsize(tmp_path / "m.pt")
