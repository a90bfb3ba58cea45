"""Bias correction after quantization (nnr/rd/bias_correction.py): the correction equals the
hand-derived mean output shift, lands in the bias or the following batch norm's running mean, and
encode_corrected keeps the weights' levels, fits a budget and lowers the output's mean error."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd.bias_correction import correct_bias, encode_corrected
from nnr.rd.hessians import layer_hessians
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes

torch = pytest.importorskip("torch", reason="bias correction needs torch: pip install torch==2.13.0")
nn = torch.nn


def state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items() if v.is_floating_point()}


def test_linear_bias_gets_minus_the_mean_shift():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 3))
    tensors = state(m)
    rng = np.random.default_rng(1)
    err = rng.normal(0, 0.1, (3, 5)).astype(np.float32)
    decoded = {**tensors, "0.weight": tensors["0.weight"] + err}
    x = [torch.randn(4, 5) + 2.0, torch.randn(6, 5) - 0.5]
    out = correct_bias(m, tensors, decoded, x)
    xs = torch.cat(x).double().numpy()
    want = tensors["0.bias"] - err.astype(np.float64) @ xs.mean(0)        # b - E mean(x)
    assert set(out) == {"0.bias"}
    np.testing.assert_allclose(out["0.bias"], want, rtol=1e-5, atol=1e-6)
    # the module is left as it was
    np.testing.assert_array_equal(m[0].weight.detach().numpy(), tensors["0.weight"])


def test_conv_without_bias_corrects_the_next_batch_norm():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1, bias=False),
                      nn.Flatten())
    m.train()
    tensors = state(m)
    rng = np.random.default_rng(3)
    err = rng.normal(0, 0.05, tensors["0.weight"].shape).astype(np.float32)
    decoded = {**tensors, "0.weight": tensors["0.weight"] + err}
    x = torch.randn(5, 2, 7, 7)
    out = correct_bias(m, tensors, decoded, x)
    shift = nn.functional.conv2d(x.double(), torch.from_numpy(err).double()).mean((0, 2, 3)).numpy()
    assert set(out) == {"1.running_mean"}      # 3.weight is not decoded differently: no shift; and no bias
    np.testing.assert_allclose(out["1.running_mean"], tensors["1.running_mean"] + shift, rtol=1e-5, atol=1e-7)
    assert m.training                            # flags restored


def test_a_layer_without_bias_or_batch_norm_is_left_alone(caplog):
    m = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh())
    tensors = state(m)
    decoded = {"0.weight": tensors["0.weight"] * 0.9}
    with caplog.at_level("INFO", logger="nnr"):
        assert correct_bias(m, tensors, decoded, torch.randn(3, 4)) == {}
    assert "no bias and no batch norm" in caplog.text


def test_errors():
    m = nn.Sequential(nn.Linear(4, 2))
    tensors = state(m)
    with pytest.raises(EncoderConfigError, match="torch.nn.Module"):
        correct_bias(object(), tensors, tensors, torch.randn(2, 4))
    with pytest.raises(EncoderConfigError, match="no Linear or Conv layer"):
        correct_bias(m, {}, {}, torch.randn(2, 4))
    with pytest.raises(EncoderConfigError, match="'0.weight' has shape"):
        correct_bias(m, {**tensors, "0.weight": np.zeros((3, 4), np.float32)}, tensors, torch.randn(2, 4))
    with pytest.raises(EncoderConfigError, match="batch 0: the module raised"):
        correct_bias(m, tensors, tensors, torch.randn(2, 5))


def cnn(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("budget, rounded", [(True, False), (False, False), (True, True)])
def test_encode_corrected_keeps_levels_fits_and_lowers_the_mean_error(budget, rounded):
    m = cnn()
    tensors = state(m)
    gen = torch.Generator().manual_seed(4)
    cal = [torch.randn(8, 3, 12, 12, generator=gen) + 0.5 for _ in range(4)]
    imp = nnr.importance(m, cal)
    opts = dict(target_bpp=2.0, importance=imp) if budget else dict(qp=-20)
    if rounded:                                            # output-aware rounding: the same levels again
        opts["hessians"] = layer_hessians(m, cal)
    plain = nnr.encode(tensors, **opts)
    data = encode_corrected(m, tensors, cal, **opts)
    assert data != plain
    a, b = nnr.decode(plain), nnr.decode(data)
    for k in ("0.weight", "3.weight", "7.weight"):         # the weights' levels are those of the first stream
        np.testing.assert_array_equal(a[k], b[k])
    if budget:
        limit = int(2.0 * sum(v.size for v in tensors.values()) / 8)
        assert len(data) <= limit
    x = torch.cat(cal)
    with torch.no_grad():
        want = m(x).double().mean(0)

    def mean_error(decoded):
        sd = {k: torch.from_numpy(np.asarray(decoded[k])).reshape(v.shape) if k in decoded else v
              for k, v in m.state_dict().items()}
        net = cnn()
        net.load_state_dict(sd)
        with torch.no_grad():
            return float(((net(x).double().mean(0) - want) ** 2).sum())
    assert mean_error(b) < 0.5 * mean_error(a)



def test_encode_corrected_with_a_budget_and_no_importance_keeps_every_qp():
    # without importance nothing is allocated again: every tensor keeps its first-pass QP and the
    # encoder's own budget check holds the corrected stream to the budget
    m = cnn(2)
    tensors = state(m)
    cal = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) + 0.5 for i in range(3)]
    plain = nnr.encode(tensors, target_bpp=2.0)
    data = encode_corrected(m, tensors, cal, target_bpp=2.0)
    assert data != plain and len(data) <= int(2.0 * sum(v.size for v in tensors.values()) / 8)
    qps = []
    for stream in (plain, data):
        dec = nnr.Decoder()
        dec.decode(stream)
        qps.append({t.name: t.qp for t in dec.tensors})
    assert qps[0] == qps[1]
    a, b = nnr.decode(plain), nnr.decode(data)
    for k in ("0.weight", "3.weight", "7.weight"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["7.bias"], b["7.bias"])

REFERENCE, WHY = find_reference()


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_the_reference_decodes_corrected_streams(tmp_path):
    # batch-norm statistics allocated with the weights (their importance derived by nnr.importance),
    # then corrected and allocated again: ordinary streams the reference decodes alike
    m = cnn(1)
    tensors = state(m)
    cal = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    imp = nnr.importance(m, cal)
    assert "1.running_mean" in imp and "4.running_mean" in imp
    streams = {"budget": encode_corrected(m, tensors, cal, target_bpp=2.5, importance=imp),
               "qp": encode_corrected(m, tensors, cal, qp=-24, dq=False)}
    for name, (kind, out) in reference_decodes(streams, tmp_path).items():
        assert kind == "decoded", out
        assert_same_tensors(nnr.decode(streams[name]), out)
