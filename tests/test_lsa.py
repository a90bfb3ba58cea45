"""Local scaling adaptation (nnr/rd/lsa.py): trained factors recover a coarsely quantized network, the
stream carries them as LS block members at their QP, the other tensors keep the first stream's levels,
and the reference reconstructs nnr's LSA streams (reconstruct_lsa) as nnr does."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes

torch = pytest.importorskip("torch")
from nnr.rd.lsa import encode_lsa, lsa_blocks, train_lsa  # noqa: E402

REFERENCE, WHY = find_reference()


def _net(seed=0):
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 6)).eval()


def _data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 2, 8, 8, generator=g) for _ in range(n)]


def _tensors(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _mse(net, decoded, batches):
    from benchmarks.rd.models.spec import loaded
    with torch.no_grad():
        ref = [net(x) for x in batches]
        with loaded(net, decoded):
            got = [net(x) for x in batches]
    return float(sum(torch.mean((a - b) ** 2) for a, b in zip(ref, got)) / len(batches))


def test_factors_recover_a_coarse_quantization():
    net = _net()
    t = _tensors(net)
    train, held_out = _data(8, 1), _data(4, 2)
    decoded = nnr.decode(nnr.encode(t, qp=-14))
    factors = train_lsa(net, decoded, train, epochs=5, lr=1e-2)
    assert sorted(factors) == ["0.weight_scaling", "2.weight_scaling", "5.weight_scaling"]
    assert factors["2.weight_scaling"].shape == (8,) and factors["5.weight_scaling"].dtype == np.float32
    scaled = dict(decoded)
    for ls, f in factors.items():
        w = ls[: -len("_scaling")]
        scaled[w] = decoded[w] * f.reshape((-1,) + (1,) * (decoded[w].ndim - 1))
    assert _mse(net, scaled, held_out) < 0.8 * _mse(net, decoded, held_out)
    assert torch.equal(net[0].weight, torch.from_numpy(t["0.weight"]))          # the module is untouched


def test_encode_lsa_stream():
    net = _net()
    t = _tensors(net)
    first = nnr.Decoder()
    first.decode(nnr.encode(t, qp=-16))
    data = encode_lsa(net, t, _data(6), qp=-16, epochs=2, lr=1e-2, ls_qp=-40)
    dec = nnr.Decoder()
    tensors = {x.name: x for x in dec.decode_tensors(data)}
    assert {n: x.role for n, x in tensors.items()} == {
        "0.weight_scaling": "LS", "0.bias": "BI", "0.weight": "W", "2.weight_scaling": "LS", "2.weight": "W",
        "5.weight_scaling": "LS", "5.bias": "BI", "5.weight": "W"}
    assert all(tensors[n].qp == -40 for n in tensors if n.endswith("_scaling"))
    for x in first.tensors:                 # the weights' levels are the first stream's
        assert np.array_equal(tensors[x.name].levels, x.levels), x.name
    out = nnr.decode(data, lsa=True)
    assert sorted(out) == ["0.bias", "0.weight", "2.weight", "5.bias", "5.weight"]
    ls = tensors["2.weight_scaling"].values
    assert np.array_equal(out["2.weight"], tensors["2.weight"].values * ls.reshape(-1, 1, 1, 1))


def test_bad_calls():
    net = _net()
    t = _tensors(net)
    with pytest.raises(EncoderConfigError, match="builds the blocks itself"):
        encode_lsa(net, t, _data(1), bnf=True)
    with pytest.raises(EncoderConfigError, match="no Linear or Conv layer"):
        train_lsa(net, {"x": np.zeros(3, np.float32)}, _data(1))
    with pytest.raises(EncoderConfigError, match="yielded no batch"):
        train_lsa(net, nnr.decode(nnr.encode(t)), [])
    with pytest.raises(EncoderConfigError, match="epochs must be"):
        train_lsa(net, nnr.decode(nnr.encode(t)), _data(1), epochs=0)
    assert lsa_blocks(t, {"5.weight_scaling": np.ones(6, np.float32)}) == {
        "block_identifier": {"5.weight": "5", "5.weight_scaling": "5", "5.bias": "5"},
        "parameter_type": {"5.weight": "weight", "5.weight_scaling": "weight.ls", "5.bias": "bias"}}


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_reference_reconstructs_lsa_streams_as_nnr(tmp_path):
    import json
    import os

    from tests.interop.reference import read_result, run_jobs, write_job
    net = _net(3)
    data = encode_lsa(net, _tensors(net), _data(4), qp=-20, epochs=1, lr=1e-2)
    write_job(str(tmp_path), "lsa", "decode", bitstream=data, options={"reconstruct_lsa": True})
    run_jobs(REFERENCE, str(tmp_path))
    kind, out = read_result(os.path.join(str(tmp_path), "lsa"))
    assert kind == "decoded", out
    assert_same_tensors(nnr.decode(data, lsa=True), out)
    kind, plain = reference_decodes({"plain": data}, tmp_path / "plain")["plain"]
    assert kind == "decoded" and json.dumps(sorted(plain)) == json.dumps(sorted(nnr.decode(data)))


def test_factor_step_follows_qp_density():
    """The factors' default step is 2^-12 at any qp_density (a budget's allocation codes at density 4):
    QP -48 at density 2, -192 at density 4; the decoded factors are the trained ones within half a step."""
    net = _net(5)
    t = _tensors(net)
    for density, qp in ((2, -48), (4, -192)):
        data = encode_lsa(net, t, _data(4), qp=-16 << (density - 2), qp_density=density, epochs=2, lr=5e-2)
        ls = [x for x in nnr.Decoder().decode_tensors(data) if x.role == "LS"]
        assert {x.qp for x in ls} == {qp}
        assert any(np.abs(x.values - 1).max() > 2 ** -8 for x in ls)       # trained, not rounded to 1
