"""Rate allocation for a bit budget (nnr.encode(target_bpp=...), nnr_core/encoder/allocate.py):
the stream fits the budget and ends within 0.5 % under it, the choice follows the importance as
the high-rate theory says, it beats one QP for all at equal size, and the reference decodes it."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr_core.encoder import allocate
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes

SHAPES = [(96, 200, 0.05), (64, 96, 0.1), (10, 64, 0.3), (160, 160, 0.01), (32, 72, 0.2)]


def model(seed=0):
    rng = np.random.default_rng(seed)
    tensors, imp = {}, {}
    for i, (r, c, s) in enumerate(SHAPES):
        tensors[f"l{i}.weight"] = (rng.standard_normal((r, c)) * s).astype(np.float32)
        tensors[f"l{i}.bias"] = (rng.standard_normal(r) * 0.01).astype(np.float32)
        imp[f"l{i}.weight"] = (rng.gamma(0.5, size=(r, c)) * 10.0 ** rng.uniform(-2, 2)).astype(np.float32)
    return tensors, imp


def params(tensors):
    return sum(v.size for v in tensors.values())


def sse(tensors, data, weights=None):
    dec = nnr.decode(data)
    out = 0.0
    for k, v in tensors.items():
        if not k.endswith(".weight"):
            continue
        d = (dec[k].astype(np.float64) - v) ** 2
        out += float((d * weights[k]).sum() if weights else d.sum())
    return out


@pytest.mark.parametrize("dq", [True, False])
@pytest.mark.parametrize("bpp", [0.4, 1.0, 2.5, 6.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_stream_fits_the_budget_and_fills_it(bpp, dq, weighted):
    tensors, imp = model()
    budget = int(bpp * params(tensors) / 8)
    data = nnr.encode(tensors, target_bpp=bpp, dq=dq, importance=imp if weighted else None)
    assert (1 - allocate.FILL) * budget <= len(data) <= budget
    dec = nnr.decode(data)
    assert list(dec) == list(tensors)


def test_budget_counts_float_parameters_not_integer_ones():
    tensors, _ = model()
    tensors["steps"] = np.arange(1000, dtype=np.int32)
    budget = int(2.0 * (params(tensors) - 1000) / 8)
    data = nnr.encode(tensors, target_bpp=2.0)
    assert (1 - allocate.FILL) * budget <= len(data) <= budget


def test_importance_sets_the_step_as_the_high_rate_theory_says():
    # two identical tensors, one 256 times as important: at high rate the equal-slope step is
    # proportional to 1/sqrt(importance), 16 times finer = 4 octaves = 64 QPs at qp_density 4
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((128, 128)) * 0.05).astype(np.float32)
    tensors = {"a.weight": w, "b.weight": w.copy()}
    imp = {"a.weight": np.full(w.shape, 256.0, np.float32), "b.weight": np.ones(w.shape, np.float32)}
    dec = nnr.Decoder()
    dec.decode(nnr.encode(tensors, target_bpp=7.0, importance=imp, dq=False))
    qp = {t.name: t.qp for t in dec.tensors}
    assert dec.units[1].fields["mps_qp_density"] == 4
    assert abs((qp["b.weight"] - qp["a.weight"]) - 64) <= 4, qp


def test_one_qp_for_all_is_about_mse_optimal_and_importance_wins_at_equal_size():
    tensors, imp = model()
    for qp in (-24, -32):
        uniform = nnr.encode(tensors, qp=qp)
        bpp = 8 * len(uniform) / params(tensors)
        mse = nnr.encode(tensors, target_bpp=bpp)
        weighted = nnr.encode(tensors, target_bpp=bpp, importance=imp)
        assert len(mse) <= len(uniform) and len(weighted) <= len(uniform)
        # plain MSE: the reference's single QP is the high-rate optimum; the allocation is not worse
        assert sse(tensors, mse) <= 1.02 * sse(tensors, uniform)
        # importance-weighted distortion: the allocation (and its weighted levels) roughly halves it
        assert sse(tensors, weighted, imp) < 0.7 * sse(tensors, uniform, imp)
        assert sse(tensors, weighted, imp) < 0.8 * sse(tensors, mse, imp)


def test_qp_density_given_is_kept_and_nonweight_step_is_unchanged():
    tensors, _ = model()
    d4 = nnr.Decoder()
    out4 = d4.decode(nnr.encode(tensors, target_bpp=3.0))
    d2 = nnr.Decoder()
    out2 = d2.decode(nnr.encode(tensors, target_bpp=3.0, qp_density=2))
    assert d4.units[1].fields["mps_qp_density"] == 4 and d2.units[1].fields["mps_qp_density"] == 2
    ref = nnr.decode(nnr.encode(tensors))
    for k in tensors:       # non-weight tensors keep nonweight_qp's step (-75 << 2 at density 4)
        if k.endswith(".bias"):
            assert np.array_equal(out4[k], ref[k]) and np.array_equal(out2[k], ref[k])


def test_non_weights_with_importance_are_allocated_too():
    # with importance, a tensor with an entry gets an allocated QP whatever its kind (a bias, a
    # batch-norm running mean: nnr.importance derives it); one without keeps nonweight_qp's step
    tensors, imp = model()
    imp = {**imp, "l0.bias": np.full(SHAPES[0][0], 1e4, np.float32), "l1.bias": np.full(SHAPES[1][0], 1e-2, np.float32)}
    data = nnr.encode(tensors, target_bpp=3.0, importance=imp)
    assert (1 - allocate.FILL) * int(3.0 * params(tensors) / 8) <= len(data) <= int(3.0 * params(tensors) / 8)
    dec = nnr.Decoder()
    dec.decode(data)
    qp = {t.name: t.qp for t in dec.tensors}
    assert qp["l2.bias"] == qp["l3.bias"] == -300
    assert qp["l1.bias"] != -300 and qp["l0.bias"] != -300
    assert qp["l0.bias"] < qp["l1.bias"] - 40, qp      # a million times as important: ~10 octaves finer


def test_encoder_allocates_each_update_of_a_sequence():
    tensors, imp = model()
    enc = nnr.Encoder(target_bpp=1.5, importance=imp)
    dec = nnr.Decoder()
    base = enc.encode(tensors, incremental=False)
    dec.decode(base)
    rng = np.random.default_rng(9)
    update = {k: (rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for k, v in tensors.items()}
    data = enc.encode(update)
    budget = int(1.5 * params(update) / 8)
    assert (1 - allocate.FILL) * budget <= len(data) <= budget
    dec.decode(data)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_target_bpp(bad):
    tensors, _ = model()
    with pytest.raises(EncoderConfigError, match="target_bpp"):
        nnr.encode(tensors, target_bpp=bad)


@pytest.mark.parametrize("extra", [dict(codebook=True), dict(bitdepth=8),
                                   dict(block_id_and_param_type={"block_identifier": {}, "parameter_type": {}})])
def test_options_that_fix_the_qps_are_refused(extra):
    tensors, _ = model()
    with pytest.raises(EncoderConfigError, match="target_bpp"):
        nnr.encode(tensors, target_bpp=2.0, **extra)


def test_a_budget_below_the_fixed_part_is_refused():
    tensors, _ = model()
    tensors["big.bias"] = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    with pytest.raises(EncoderConfigError, match="budget"):
        nnr.encode(tensors, target_bpp=0.5)


def test_importance_of_the_wrong_size_is_refused():
    tensors, imp = model()
    imp["l0.weight"] = imp["l0.weight"][:5]
    with pytest.raises(EncoderConfigError, match="l0.weight"):
        nnr.encode(tensors, target_bpp=2.0, importance=imp)


REFERENCE, WHY = find_reference()


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_the_reference_decodes_allocated_streams(tmp_path):
    tensors, imp = model()
    streams = {"mse-dq": nnr.encode(tensors, target_bpp=2.0),
               "imp-urq": nnr.encode(tensors, target_bpp=3.0, importance=imp, dq=False),
               "imp-dq-d2": nnr.encode(tensors, target_bpp=1.0, importance=imp, qp_density=2)}
    for name, (kind, out) in reference_decodes(streams, tmp_path).items():
        assert kind == "decoded", out
        assert_same_tensors(nnr.decode(streams[name]), out)


def snr_db(tensors):
    def metric(dec):
        err = sum(float(((dec[k].astype(np.float64) - v) ** 2).sum()) for k, v in tensors.items())
        energy = sum(float((v.astype(np.float64) ** 2).sum()) for v in tensors.values())
        return 10 * np.log10(energy / err)
    return metric


def test_search_target_metric_finds_the_smallest_budget():
    from nnr.rd import search_target_metric
    tensors, _ = model()
    metric = snr_db(tensors)
    data, bpp, value = search_target_metric(tensors, metric, 25.0, tolerance=0.05)
    assert value >= 25.0 and value == metric(nnr.decode(data))
    assert len(data) <= int(bpp * params(tensors) / 8)
    # the bracket's lower end failed: a budget one tolerance lower misses the target
    assert metric(nnr.decode(nnr.encode(tensors, target_bpp=bpp - 0.05))) < 25.0
    # lower is better: the same search on the error
    data, bpp2, err = search_target_metric(tensors, lambda d: -metric(d), -25.0, higher_is_better=False,
                                           tolerance=0.05)
    assert err <= -25.0 and abs(bpp2 - bpp) <= 0.05 + 1e-9


def test_search_target_metric_errors():
    from nnr.rd import search_target_metric
    tensors, _ = model()
    with pytest.raises(EncoderConfigError, match="raise bpp_range"):
        search_target_metric(tensors, snr_db(tensors), 500.0, bpp_range=(0.5, 2.0))
    with pytest.raises(EncoderConfigError, match="callable"):
        search_target_metric(tensors, 3, 1.0)
    with pytest.raises(EncoderConfigError, match="non-finite|nan"):
        search_target_metric(tensors, lambda d: float("nan"), 1.0)


@pytest.mark.parametrize("extra", [{}, {"dq": False}, {"importance": "imp"}, {"sparsity": 0.3}])
def test_the_stream_is_what_its_qps_give(extra):
    # the encode reuses the allocation's quantization of each chosen QP: the bytes must be those of a
    # plain encode with the same per-tensor QPs (an independent quantization)
    tensors, imp = model(2)
    opts = {k: (imp if v == "imp" else v) for k, v in extra.items()}
    data = nnr.encode(tensors, target_bpp=2.2, **opts)
    dec = nnr.Decoder()
    dec.decode(data)
    qps = {t.name: t.qp for t in dec.tensors}
    assert data == nnr.encode(tensors, qp_per_tensor=qps, qp_density=4, nonweight_qp=-300, **opts)
