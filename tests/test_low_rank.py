"""Low-rank decomposition in the encoder (nnr_core/encoder/lowrank.py, HLS §9.4) and the rank choice
(nnr/rd/lowrank.py): G and H in two consecutive DC units carrying W's dimensions, decoded to W = G·H;
ranks chosen only where they save bytes at no more squared error."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd.lowrank import choose_ranks, encode_low_rank
from nnr_core.encoder.lowrank import factors
from nnr_core.syntax.constants import NNR_CPT_DC


def _low_rank_plus_noise(seed, rows=64, cols=96, rank=6, noise=1e-3):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.3, (rows, rank)) @ rng.normal(0, 0.3, (rank, cols))
    return (a + rng.normal(0, noise, (rows, cols))).astype(np.float32)


def test_factors_are_the_balanced_truncated_svd():
    w = _low_rank_plus_noise(0, noise=0.0)
    g, h = factors(w, 6)
    assert g.shape == (64, 6) and h.shape == (6, 96)
    assert np.allclose(g @ h, w, atol=1e-5)
    assert np.allclose(np.linalg.norm(g, axis=0), np.linalg.norm(h, axis=1), rtol=1e-4)   # balanced


@pytest.mark.parametrize("scan_order", [0, 1, 3])
def test_units_and_recomposition(scan_order):
    rng = np.random.default_rng(1)
    t = {"fc.weight": _low_rank_plus_noise(1), "fc.bias": rng.normal(0, 0.1, 64).astype(np.float32),
         "conv.weight": rng.normal(0, 0.1, (16, 4, 3, 3)).astype(np.float32)}
    data = nnr.encode(t, low_rank={"fc.weight": 6, "conv.weight": 5}, qp=-40, scan_order=scan_order)
    dec = nnr.Decoder()
    members = dec.decode_tensors(data)
    assert [(m.name, m.role, m.values.shape) for m in members] == [
        ("fc.weight_G", "G", (64, 6)), ("fc.weight_H", "H", (6, 96)), ("fc.bias", "T", (64,)),
        ("conv.weight_G", "G", (16, 5)), ("conv.weight_H", "H", (5, 36))]
    ndus = [u.fields for u in dec.units if u.nnr_unit_type == 5]
    assert [(f["compressed_parameter_types"] & NNR_CPT_DC, f.get("decomposition_rank"), f.get("g_number_of_rows"),
             f["tensor_dimensions"]) for f in ndus] == [
        (1, 6, 64, [64, 96]), (1, 6, 64, [64, 96]), (0, None, None, [64]), (1, 5, 16, [16, 4, 3, 3]),
        (1, 5, 16, [16, 4, 3, 3])]
    out = nnr.decode(data)
    assert list(out) == ["fc.weight", "fc.bias", "conv.weight"] and out["conv.weight"].shape == (16, 4, 3, 3)
    g, h = (m.values.astype(np.float64) for m in members[:2])
    assert np.array_equal(out["fc.weight"], (g @ h).astype(np.float32))
    assert np.abs(out["fc.weight"] - t["fc.weight"]).max() < 0.01


@pytest.mark.parametrize("option, match", [
    ({"fc.weight": 0}, "rank must be an integer >= 1"),
    ({"fc.weight": 97}, "exceeds min"),
    ({"fc.bias": 1}, "has 1 dimension"),
    ({"nope": 2}, "not a tensor of the model"),
    ({"idx": 1}, "integer, raw_float or block tensor"),
])
def test_bad_options(option, match):
    t = {"fc.weight": _low_rank_plus_noise(2), "fc.bias": np.ones(64, np.float32),
         "idx": np.arange(6, dtype=np.int32).reshape(2, 3)}
    with pytest.raises(EncoderConfigError, match=match):
        nnr.encode(t, low_rank=option)


def test_not_with_updates_budgets_or_pre_signalling():
    t = {"w": _low_rank_plus_noise(3)}
    with pytest.raises(EncoderConfigError, match="incremental"):
        nnr.Encoder(low_rank={"w": 2}).encode(t)
    with pytest.raises(EncoderConfigError, match="target_bpp"):
        nnr.encode(t, low_rank={"w": 2}, target_bpp=4.0)
    with pytest.raises(EncoderConfigError, match="pre_signalling"):
        nnr.encode(t, low_rank={"w": 2}, pre_signalling=True)


def test_choose_ranks_where_it_pays():
    rng = np.random.default_rng(4)
    t = {"low": _low_rank_plus_noise(4, noise=2e-3), "full": rng.normal(0, 0.1, (64, 96)).astype(np.float32)}
    chosen = choose_ranks(t, qp=-30)
    assert set(chosen) == {"low"} and chosen["low"][0] >= 4
    plain, lrd = nnr.encode(t, qp=-30), encode_low_rank(t, qp=-30)
    assert len(lrd) < 0.6 * len(plain)
    a, b = nnr.decode(plain), nnr.decode(lrd)
    for k in t:
        assert np.sum((b[k] - t[k]) ** 2) <= np.sum((a[k] - t[k]) ** 2) * (1 + 1e-9)
