"""Importance-weighted quantization (nnr_core/quant/weighted.py): the weighted uniform quantizer and trellis."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd import search, weighted
from nnr_core.quant.quantize import quantize_tcq, quantize_uniform


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(11)
    return {"conv.weight": (rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32),
            "conv.bias": (rng.standard_normal(16) * 0.01).astype(np.float32),
            "fc.weight": (rng.laplace(size=(12, 150)) * 0.05).astype(np.float32)}


def importance_of(model, seed=5):
    rng = np.random.default_rng(seed)
    return {n: rng.gamma(0.3, size=v.shape) for n, v in model.items() if v.ndim > 1}


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 4.0])
@pytest.mark.parametrize("scan_order", [0, 2])
def test_unit_weights_reproduce_the_reference_kernels(lam, scan_order):
    rng = np.random.default_rng(int(10 * lam) + scan_order)
    w = (rng.laplace(size=(40, 70)) * 0.03).astype(np.float32)
    ones = np.ones(w.size)
    for qp in (-38, -30, -22):
        ref = quantize_tcq(w, qp, 2, scan_order=scan_order, lambda_scale=lam)
        got = quantize_tcq(w, qp, 2, scan_order=scan_order, lambda_scale=lam, importance=ones)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1] == ref[1]
        ref = quantize_uniform(w, qp, 2, lambda_scale=lam, scan_order=scan_order)
        got = quantize_uniform(w, qp, 2, lambda_scale=lam, scan_order=scan_order, importance=ones)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1] == ref[1]


@pytest.mark.parametrize("dq", [True, False])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_constant_importance_gives_default_bytes(model, dq, lam):
    default = nnr.encode(model, dq=dq, lambda_scale=lam)
    for value in (1.0, 0.1, 3.5):
        imp = {n: np.full(v.shape, value) for n, v in model.items() if v.ndim > 1}
        assert nnr.encode(model, dq=dq, lambda_scale=lam, importance=imp, importance_mix=1.0) == default


def test_weights_change_the_levels(model):
    imp = importance_of(model)
    for dq in (True, False):
        assert nnr.encode(model, dq=dq, lambda_scale=1.0, importance=imp) != nnr.encode(model, dq=dq, lambda_scale=1.0)


@pytest.mark.parametrize("dq", [True, False])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_weighted_streams_decode_to_the_quantizer_output(model, dq, lam):
    imp = importance_of(model)
    data = nnr.encode(model, qp=-30, dq=dq, lambda_scale=lam, importance=imp, importance_mix=0.9)
    dec = nnr.decode(data)
    for name, w in model.items():
        want, _ = search.reconstruct(w, -30 if name in imp else -75, dq=dq, lambda_scale=lam,
                                     importance=imp.get(name), importance_mix=0.9)
        np.testing.assert_array_equal(dec[name], want)


def test_trellis_keeps_the_important_parameter_closer():
    # Δ = 1 at QP 0 (qp_density 2), no rate term. Position 1 is in Q0 (even indices): 0 is nearest
    # to 0.85 (error 0.7225), 2 costs 1.3225. Position 2 (t = 0) takes 0 either way. Position 3
    # lies in Q1 (odd indices: 1, error 0.01) only if position 1 took an odd k (index 2), else in
    # Q0 (index 2, error 0.81). Unweighted: 1.3225 + 0.01 < 0.7225 + 0.81, so [2, 0, 1].
    w = np.array([0.85, 0.0, 1.1], dtype=np.float32)
    levels, qp = quantize_tcq(w, 0, 2)
    assert qp == 0 and list(levels) == [2, 0, 1]
    # weights (2.5, 0.25, 0.25): 2.5 * 1.3225 + 0.25 * 0.01 > 2.5 * 0.7225 + 0.25 * 0.81
    levels, _ = weighted.quantize_weighted(w, [10.0, 1.0, 1.0], 0, 2, dq=True, mix=1.0)
    assert list(levels) == [0, 0, 2]
    levels, _ = weighted.quantize_weighted(w, [1.0, 1.0, 10.0], 0, 2, dq=True, mix=1.0)
    assert list(levels) == [2, 0, 1]


def test_uniform_keeps_the_important_parameter_closer():
    # Δ = 1, lambda_scale 1: λ = ln2/6 ≈ 0.1155 Δ² per bit; t = 0.7 has the candidates 0 (error
    # 0.49) and 1 (error 0.09), 1 costs about 2 bits more (sign and greater-than flag). Weight g
    # keeps 1 when g·0.4/0.1155 > ~2 bits: weights (1.98, 0.0198) keep the first, zero the second.
    w = np.array([0.7, 0.7], dtype=np.float32)
    assert list(quantize_uniform(w, 0, 2, lambda_scale=1.0)[0]) == [1, 1]
    levels, _ = weighted.quantize_weighted(w, [10.0, 0.1], 0, 2, lambda_scale=1.0, mix=1.0)
    assert list(levels) == [1, 0]
    levels, _ = weighted.quantize_weighted(w, [0.1, 10.0], 0, 2, lambda_scale=1.0, mix=1.0)
    assert list(levels) == [0, 1]


@pytest.mark.parametrize("dq", [True, False])
def test_weighted_lowers_weighted_error_at_equal_size(model, dq):
    imp = importance_of(model, seed=3)

    def point(qp, **extra):
        data = nnr.encode(model, qp=qp, dq=dq, lambda_scale=1.0, **extra)
        return len(data), np.log(weighted.weighted_sse(model, nnr.decode(data), imp))
    curve = np.array([point(qp, importance=imp) for qp in range(-38, -21, 2)])[::-1]   # by size
    for qp in (-24, -28, -32):
        size, err = point(qp)
        assert curve[0, 0] < size < curve[-1, 0]
        assert np.interp(size, curve[:, 0], curve[:, 1]) < err - 0.03         # at least 3 % lower


def test_floor_bounds_the_weights():
    g = weighted.distortion_weights("t", np.zeros(4), [0.0, 0.0, 0.0, 8.0], mix=0.9)
    np.testing.assert_allclose(g, [0.1, 0.1, 0.1, 3.7])
    g = weighted.distortion_weights("t", np.zeros(4), [1.0, 1.0, 1.0, 9.0], mix=1.0, power=0.5)
    np.testing.assert_allclose(g, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert weighted.distortion_weights("t", np.zeros(3), [2.0, 2.0, 2.0]) is None
    assert weighted.distortion_weights("t", np.zeros(3), [1.0, 2.0, 3.0], mix=0.0) is None


@pytest.mark.parametrize("dq", [True, False])
@pytest.mark.parametrize("bad, match", [(np.full(1800, np.nan), "finite"), (-np.ones(1800), ">= 0"),
                                        (np.ones(7), "1800"), (np.zeros(1800), "all zero"),
                                        (np.array(["x"] * 1800), "numeric")])
def test_bad_importance_names_the_tensor(model, dq, bad, match):
    with pytest.raises(EncoderConfigError, match=match) as err:
        nnr.encode(model, dq=dq, importance={"fc.weight": bad})
    assert "'fc.weight'" in str(err.value)


@pytest.mark.parametrize("option, value", [("importance_mix", -0.1), ("importance_mix", 1.5),
                                           ("importance_mix", float("nan")), ("importance_mix", "0.5"),
                                           ("importance_power", 0.0), ("importance_power", float("inf")),
                                           ("importance_power", True)])
def test_bad_importance_options(model, option, value):
    with pytest.raises(EncoderConfigError, match=option):
        nnr.encode(model, importance=importance_of(model), **{option: value})
