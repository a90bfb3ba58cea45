"""Sparsification before coding: per-tensor masks (nnr_core/encoder/sparsify.py) and the model-level
tool nnr.rd.sparsify (budgets across tensors, gradual pruning with a fine-tuning hook)."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd import sparsify
from nnr_core.encoder.sparsify import count, lowest, lowest_sized, prune_mask


def model(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv.weight": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
            "conv.bias": (rng.standard_normal(8) * 0.01).astype(np.float32),
            "fc.weight": (rng.laplace(size=(10, 72)) * 0.05).astype(np.float32),
            "fc.bias": np.zeros(10, np.float32),
            "steps": np.arange(4, dtype=np.int64).reshape(2, 2)}


def importance_of(tensors, seed=1):
    rng = np.random.default_rng(seed)
    return {n: rng.gamma(0.3, size=v.shape) for n, v in tensors.items() if v.dtype.kind == "f"}


def zeroed(mask):
    return int(np.count_nonzero(~mask))


# -- the per-tensor masks ----------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
def test_mask_zeroes_exactly_the_requested_count(fraction):
    w = np.random.default_rng(3).standard_normal((37, 11)).astype(np.float32)
    assert zeroed(prune_mask(w, fraction)) == int(np.floor(fraction * w.size + 0.5))
    m = prune_mask(w, fraction, structured=True)
    assert zeroed(m) == int(np.floor(fraction * 37 + 0.5)) * 11


def test_count_rounds_half_up():
    assert [count(f, 10) for f in (0.0, 0.04, 0.05, 0.15, 0.25, 0.3, 0.7, 0.95)] == [0, 0, 1, 2, 3, 3, 7, 10]


@pytest.mark.parametrize("seed", range(6))
def test_mask_is_the_stable_sort_of_the_saliency(seed):
    # the oracle: a stable full sort of |w| (importance: F·w²), first k zeroed; values rounded so
    # that ties are common
    rng = np.random.default_rng(seed)
    w = np.round(rng.standard_normal((20, 9)) * 4) / 4
    imp = np.round(rng.gamma(0.5, size=w.shape) * 2) / 2 + 0.5
    k = count(0.4, w.size)
    for sal, kw in ((np.abs(w), {}), (imp * w * w, dict(importance=imp, importance_mix=1.0))):
        want = np.ones(w.size, bool)
        want[np.argsort(sal.reshape(-1), kind="stable")[:k]] = False
        np.testing.assert_array_equal(prune_mask(w, 0.4, **kw).reshape(-1), want)


def test_ties_are_broken_by_index():
    w = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]], np.float32)
    np.testing.assert_array_equal(prune_mask(w, 0.5), [[False] * 4, [True] * 4])
    np.testing.assert_array_equal(prune_mask(w, 0.25), [[False, False, True, True], [True] * 4])
    np.testing.assert_array_equal(prune_mask(w, 0.5, structured=True), [[False] * 4, [True] * 4])
    assert lowest(np.array([2.0, 1.0, 1.0, 1.0, 0.5]), 3).tolist() == [False, True, True, False, True]


def test_importance_changes_the_choice():
    w = np.array([[1.0, 0.5]], np.float32)
    imp = np.array([[0.1, 1.0]])
    assert prune_mask(w, 0.5).tolist() == [[True, False]]                      # |0.5| < |1|
    # F·w²: 0.1 · 1 = 0.1 < 1 · 0.25
    assert prune_mask(w, 0.5, importance=imp, importance_mix=1.0).tolist() == [[False, True]]


def test_importance_floor():
    # F = 0 makes the OBD saliency of the large weight 0; the floor (1 − β)·mean(F) = 0.05 gives it
    # 0.05 · 100 = 5 against 0.95 · 0.25 for the small one
    w = np.array([[10.0, 0.5]], np.float32)
    imp = np.array([[0.0, 1.0]])
    assert prune_mask(w, 0.5, importance=imp, importance_mix=1.0).tolist() == [[False, True]]
    assert prune_mask(w, 0.5, importance=imp, importance_mix=0.9).tolist() == [[True, False]]
    assert prune_mask(w, 0.5, importance=imp).tolist() == [[True, False]]        # the default β is 0.9


def test_structured_zeroes_the_least_salient_rows():
    w = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0]], np.float32)
    # mean w² per row: 4.5, 1, 2 -> row 1 first, then row 2
    assert prune_mask(w, 1 / 3, structured=True).tolist() == [[True, True], [False, False], [True, True]]
    assert prune_mask(w, 2 / 3, structured=True).tolist() == [[True, True], [False, False], [False, False]]
    # with F: row means of F·w² are (0.01·9 + 0)/2 = 0.045, 1, 2 -> row 0 goes first
    imp = np.array([[0.01, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert prune_mask(w, 1 / 3, structured=True, importance=imp, importance_mix=1.0)[0].tolist() == [False, False]


def test_structured_conv_rows_are_output_channels():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    w[4] *= 0.01
    w[1] *= 0.1
    m = prune_mask(w, 0.34, structured=True)                    # round(0.34 · 6) = 2 rows
    assert m.shape == w.shape
    assert [bool(m[o].any()) for o in range(6)] == [True, False, True, True, False, True]
    assert all(m[o].all() or not m[o].any() for o in range(6))


def test_lowest_sized_takes_the_prefix_nearest_the_budget():
    # scores 1, 2, 3 with sizes 1, 4, 1: prefixes hold 1, 5, 6 parameters
    assert lowest_sized([1.0, 2.0, 3.0], [1, 4, 1], 4).tolist() == [True, True, False]      # 5 is nearer 4 than 1
    assert lowest_sized([1.0, 2.0, 3.0], [1, 4, 1], 2).tolist() == [True, False, False]     # 1 is nearer 2 than 5
    assert lowest_sized([2.0, 1.0, 1.0], [1, 1, 1], 2).tolist() == [False, True, True]
    assert lowest_sized([1.0, 1.0], [3, 3], 9).tolist() == [True, True]


# -- the model-level tool ----------------------------------------------------------------------------

@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("scope", ["global", "per-tensor"])
@pytest.mark.parametrize("with_importance", [False, True])
def test_only_weight_tensors_change_and_counts_hold(structured, scope, with_importance):
    t = model()
    out, masks = sparsify(t, 0.5, structured=structured, scope=scope,
                          importance=importance_of(t) if with_importance else None)
    assert list(masks) == ["conv.weight", "fc.weight"]
    for name in ("conv.bias", "fc.bias", "steps"):
        np.testing.assert_array_equal(out[name], t[name])
        assert out[name].dtype == t[name].dtype
    for name, mask in masks.items():
        assert mask.dtype == bool and mask.shape == t[name].shape
        np.testing.assert_array_equal(out[name], np.where(mask, t[name], 0))
        if scope == "per-tensor":
            unit = t[name].size // t[name].shape[0] if structured else 1
            assert zeroed(mask) == count(0.5, mask.size // unit) * unit
    total = sum(m.size for m in masks.values())
    gone = sum(zeroed(m) for m in masks.values())
    if not structured:
        assert gone == count(0.5, total)
    else:                                  # rows of 27 and 72 parameters: within half the widest row
        assert abs(gone - 0.5 * total) <= 72 / 2


def test_global_and_per_tensor_differ_as_derived():
    a = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    b = np.array([[0.1, 1.0, 1.0, 1.0]], np.float32)
    t = {"a": a, "b": b}
    _, m = sparsify(t, 0.5, scope="per-tensor")
    assert m["a"].tolist() == [[False, False, True, True]] and m["b"].tolist() == [[False, False, True, True]]
    # global, w² / mean(w²): b[0] scores 0.01 / 0.7525, every a scores 1, b's others 1.33 ->
    # b[0] and the first three of a (ties: tensor order, then index)
    _, m = sparsify(t, 0.5, scope="global")
    assert m["a"].tolist() == [[False, False, False, True]] and m["b"].tolist() == [[False, True, True, True]]
    # with importance the saliencies are not normalised: F·w² of b is 100x below a's
    t = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([[3.0, 4.0]], np.float32)}
    imp = {"a": np.ones((1, 2)), "b": np.full((1, 2), 0.01)}
    _, m = sparsify(t, 0.5, importance=imp, scope="global")
    assert m["a"].tolist() == [[True, True]] and m["b"].tolist() == [[False, False]]
    _, m = sparsify(t, 0.5, importance=imp, scope="per-tensor")
    assert m["a"].tolist() == [[False, True]] and m["b"].tolist() == [[False, True]]


def test_global_magnitude_is_invariant_to_a_tensor_scale():
    t = model()
    scaled = dict(t, **{"fc.weight": t["fc.weight"] * np.float32(64)})
    for structured in (False, True):
        _, m1 = sparsify(t, 0.6, structured=structured)
        _, m2 = sparsify(scaled, 0.6, structured=structured)
        for name in m1:
            np.testing.assert_array_equal(m1[name], m2[name])


def test_structured_global_rows():
    # rows: a has 2 rows of width 2 (mean w² 1 and 16), b 2 rows of width 4 (mean F·w² 0.5 and 2);
    # budget 6 of 12 parameters: b row 0 (4), then a row 0 (6 in all)
    a = np.array([[1.0, 1.0], [4.0, 4.0]], np.float32)
    b = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    imp = {"a": np.ones(a.shape), "b": np.full(b.shape, 0.5)}
    _, m = sparsify({"a": a, "b": b}, 0.5, structured=True, importance=imp, importance_mix=1.0)
    assert m["a"].tolist() == [[False, False], [True, True]]
    assert m["b"].tolist() == [[False] * 4, [True] * 4]


def test_names_and_exclude():
    t = model()
    _, m = sparsify(t, 0.5, names=["fc.weight", "conv.bias"], scope="per-tensor")
    assert list(m) == ["conv.bias", "fc.weight"]
    assert zeroed(m["conv.bias"]) == 4                     # a 1-D tensor, pruned because it was named
    out, m = sparsify(t, 0.5, exclude=["conv.weight"])
    assert list(m) == ["fc.weight"]
    assert list(sparsify(t, 0.5, names="fc.weight")[1]) == ["fc.weight"]          # one name as a string
    assert list(sparsify(t, 0.5, exclude="fc.weight")[1]) == ["conv.weight"]
    np.testing.assert_array_equal(out["conv.weight"], t["conv.weight"])


def test_inputs_are_not_mutated_and_outputs_are_new():
    t = model()
    imp = importance_of(t)
    before = {n: v.copy() for n, v in t.items()}
    imp_before = {n: v.copy() for n, v in imp.items()}

    def finetune(tensors, masks):
        for a in tensors.values():
            a += 1                       # in place, on the arrays it was given
        for m in masks.values():
            m[...] = True
        return tensors

    out, masks = sparsify(t, 0.7, importance=imp, finetune=finetune, steps=2)
    for n in t:
        np.testing.assert_array_equal(t[n], before[n])
        assert out[n] is not t[n] and not np.shares_memory(out[n], t[n])
    for n in imp:
        np.testing.assert_array_equal(imp[n], imp_before[n])
    for n, m in masks.items():                       # the callable's writes to its masks changed nothing
        assert zeroed(m) > 0 and np.all(out[n][~m] == 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtype_preserved(dtype):
    w = np.random.default_rng(2).standard_normal((6, 5)).astype(dtype)
    out, m = sparsify({"w": w}, 0.5)
    assert out["w"].dtype == dtype and zeroed(m["w"]) == 15
    np.testing.assert_array_equal(out["w"][m["w"]], w[m["w"]])


def test_finetune_is_called_per_step_and_masks_are_honoured():
    t = model()
    calls = []

    def finetune(tensors, masks):
        calls.append({n: m.copy() for n, m in masks.items()})
        for n in masks:
            assert np.all(tensors[n][~masks[n]] == 0)               # it sees the masked tensors
        # regrow everything, and move the kept weights, as training would
        return {n: (a + np.ones_like(a)) for n, a in tensors.items()}

    out, masks = sparsify(t, 0.6, finetune=finetune, steps=3)
    assert len(calls) == 3
    total = sum(m.size for m in masks.values())
    for j, got in enumerate(calls, 1):                             # sparsity 0.2, 0.4, 0.6
        assert sum(zeroed(m) for m in got.values()) == count(0.6 * j / 3, total)
    for earlier, later in zip(calls, calls[1:]):                   # once zeroed, zeroed for good
        for n in earlier:
            assert np.all(~later[n][~earlier[n]])
    for n, m in masks.items():
        np.testing.assert_array_equal(m, calls[-1][n])
        assert np.all(out[n][~m] == 0)
        assert np.all(out[n][m] != 0)
    np.testing.assert_array_equal(out["fc.bias"], t["fc.bias"] + 3)       # the callable's other tensors kept


def test_gradual_pruning_keeps_earlier_zeros_when_new_zeros_tie():
    # the callable zeroes the first half of every tensor (lower indices than most pruned
    # positions): at the second step there are more zeros than the budget, and the ones pruned at
    # the first step must still be among those chosen
    t = {"w": np.random.default_rng(8).standard_normal((20, 10)).astype(np.float32)}
    seen = []

    def finetune(tensors, masks):
        seen.append(masks["w"].copy())
        w = tensors["w"].copy()
        w[:10] = 0
        return {"w": w}

    out, masks = sparsify(t, 0.4, finetune=finetune, steps=2)
    assert zeroed(seen[0]) == 40 and zeroed(seen[1]) == 80
    assert np.all(~seen[1][~seen[0]])
    first_late = ~seen[0][10:]                      # pruned at step 1 in the second half
    assert first_late.any() and np.all(out["w"][10:][first_late] == 0)


def test_finetune_once_with_one_step():
    n = []
    sparsify(model(), 0.3, finetune=lambda t, m: n.append(1) or t)
    assert n == [1]


# -- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_bad_sparsity(bad):
    with pytest.raises(EncoderConfigError, match="sparsity"):
        sparsify(model(), bad)
    with pytest.raises(EncoderConfigError, match="sparsity"):
        prune_mask(np.ones((2, 2), np.float32), bad)


def bad_finetunes():
    def shape(t, m):
        return dict(t, **{"fc.weight": t["fc.weight"][:5]})

    def dtype(t, m):
        return dict(t, **{"conv.weight": t["conv.weight"].astype(np.float64)})

    def nonfinite(t, m):
        return dict(t, **{"fc.bias": np.full(10, np.nan, np.float32)})

    def missing(t, m):
        return {n: v for n, v in t.items() if n != "conv.weight"}

    return [(shape, "'fc.weight'.*float32 \\(5, 72\\)"), (dtype, "'conv.weight'.*float64"),
            (nonfinite, "non-finite.*'fc.bias'"), (missing, "without tensor 'conv.weight'"),
            (lambda t, m: dict(t, extra=np.zeros(1)), "unknown tensor 'extra'"),
            (lambda t, m: list(t.values()), "must return a dict")]


@pytest.mark.parametrize("finetune,message", bad_finetunes())
def test_bad_finetune_results(finetune, message):
    with pytest.raises(EncoderConfigError, match=message):
        sparsify(model(), 0.5, finetune=finetune)


def test_bad_arguments():
    t = model()
    imp = importance_of(t)
    cases = [
        (dict(importance=dict(imp, **{"fc.weight": np.ones((72, 10))})), "importance\\['fc.weight'\\] has shape"),
        (dict(importance=dict(imp, **{"fc.weight": np.full((10, 72), np.nan)})), "'fc.weight'.*non-finite"),
        (dict(importance=dict(imp, **{"conv.weight": -np.ones((8, 3, 3, 3))})), "'conv.weight'.*negative"),
        (dict(importance={"fc.weight": imp["fc.weight"]}), "no entry for tensor 'conv.weight'"),
        (dict(importance=[1, 2]), "importance must be a dict"),
        (dict(importance=imp, importance_mix=1.5), "importance_mix"),
        (dict(structured=True, names=["fc.weight", "fc.bias"]), "'fc.bias' has 1 dimension"),
        (dict(names=["steps"]), "'steps'.*floating-point"),
        (dict(names=["nope"]), "names: no tensor named 'nope'"),
        (dict(exclude=["nope"]), "exclude: no tensor named 'nope'"),
        (dict(exclude=["conv.weight", "fc.weight"]), "no tensor to sparsify"),
        (dict(scope="layer"), "scope"),
        (dict(steps=0), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(finetune="yes"), "finetune must be callable"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EncoderConfigError, match=message):
            sparsify(t, 0.5, **kwargs)
    with pytest.raises(EncoderConfigError, match="'w'.*non-finite"):
        sparsify({"w": np.array([[1.0, np.inf]], np.float32)}, 0.5)
    with pytest.raises(EncoderConfigError, match="non-empty dict"):
        sparsify({}, 0.5)
    with pytest.raises(EncoderConfigError, match="'b' has 1 dimension"):
        prune_mask(np.ones(4, np.float32), 0.5, structured=True, name="b")


# -- coded: zeros decode as exact zeros --------------------------------------------------------------

def sparse_model(structured):
    t = {n: v for n, v in model(5).items() if n != "steps"}
    return sparsify(t, 0.6, structured=structured, importance=importance_of(t))


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_uniform_quantizer_decodes_exact_zeros_where_masked(structured, lam):
    out, masks = sparse_model(structured)
    dec = nnr.decode(nnr.encode(out, qp=-30, dq=False, lambda_scale=lam))
    for name, mask in masks.items():
        np.testing.assert_array_equal(dec[name][~mask], np.zeros(zeroed(mask), np.float32))
        assert np.count_nonzero(dec[name][mask]) > 0.8 * mask.sum()


@pytest.mark.parametrize("structured", [False, True])
def test_trellis_moves_a_masked_zero_by_one_step_at_most(structured):
    # the reference's trellis (dq, no rate term) may code a zero as the smallest level to reach a
    # better state for its neighbours; the pruned position then decodes to ±Δ, never more
    out, masks = sparse_model(structured)
    dec = nnr.decode(nnr.encode(out, qp=-30, dq=True))
    for name, mask in masks.items():
        smallest = np.abs(dec[name][dec[name] != 0]).min()
        assert np.abs(dec[name][~mask]).max(initial=0.0) <= smallest


@pytest.mark.parametrize("structured", [False, True])
def test_trellis_keeps_masked_zeros_under_a_pinning_importance(structured):
    # distortion weights huge where pruned (importance_mix 1, no rate term) keep those levels at 0
    out, masks = sparse_model(structured)
    pin = {n: np.where(m, 1.0, 1e9) for n, m in masks.items()}
    dec = nnr.decode(nnr.encode(out, qp=-30, dq=True, importance=pin, importance_mix=1.0))
    for name, mask in masks.items():
        np.testing.assert_array_equal(dec[name][~mask], np.zeros(zeroed(mask), np.float32))


@pytest.mark.parametrize("dq", [False, True])
def test_zero_rows_cost_little_with_row_skipping(dq):
    # against the smaller model that keeps only the rows left: the zero rows add their row_skip_list
    # bins (one per row) and little else; without row skipping they cost more
    t = {"w": np.random.default_rng(6).standard_normal((128, 256)).astype(np.float32)}
    out, masks = sparsify(t, 0.5, structured=True)
    keep = masks["w"].any(axis=1)
    small = len(nnr.encode({"w": out["w"][keep]}, dq=dq))
    pin = {"importance": {"w": np.where(masks["w"], 1.0, 1e9)}, "importance_mix": 1.0} if dq else {}
    skipped = len(nnr.encode(out, dq=dq, row_skipping=True, **pin))
    assert small < skipped <= small + 16                    # 128 bins and a larger shape
    assert len(nnr.encode(out, dq=dq, row_skipping=False, **pin)) > skipped + 40


def test_reference_decodes_sparse_streams(tmp_path):
    """Sparse models are ordinary input: the reference writes the same bytes for them and decodes
    nnr's streams (row skipping, the pinned trellis, uniform) as nnr does."""
    from tests.interop.reference import find_reference, read_result, run_jobs, write_job
    reference, why = find_reference()
    if reference is None:
        pytest.skip(f"interop: {why}")
    un, _ = sparse_model(False)
    st, masks = sparse_model(True)
    pin = {n: np.where(m, 1.0, 1e9) for n, m in masks.items()}
    streams = {"unstructured": nnr.encode(un), "structured": nnr.encode(st),
               "structured_uniform": nnr.encode(st, dq=False, lambda_scale=1.0),
               "structured_pinned": nnr.encode(st, importance=pin, importance_mix=1.0)}
    options = dict(qp=-32, qp_density=2, nonweight_qp=-75, use_dq=True, codebook_mode=0, scan_order=0,
                   row_skipping=True, param_opt=True, cabac_unary_length_minus1=10, int_quant_bw=None)
    for key, data in streams.items():
        write_job(str(tmp_path), key, "decode", bitstream=data)
    for key, t in (("enc_unstructured", un), ("enc_structured", st)):
        write_job(str(tmp_path), key, "encode", tensors=t, options=options)
    run_jobs(reference, str(tmp_path))
    for key in ("unstructured", "structured"):
        kind, ref_bytes = read_result(str(tmp_path / f"enc_{key}"))
        assert kind == "bitstream" and ref_bytes == streams[key], key
    for key, data in streams.items():
        kind, got = read_result(str(tmp_path / key))
        assert kind == "decoded", got
        ours = nnr.decode(data)
        assert sorted(got) == sorted(ours)
        for name in ours:
            assert np.array_equal(np.asarray(got[name], dtype=np.float32), ours[name]), (key, name)


def test_a_tensor_zeroed_entirely_is_logged(caplog):
    t = {"big": np.full((4, 4), 10.0, np.float32), "small": np.full((2, 2), 1.0, np.float32)}
    imp = {"big": np.ones((4, 4)), "small": np.ones((2, 2))}
    with caplog.at_level("WARNING", logger="nnr"):
        _, m = sparsify(t, 0.2, importance=imp)
    assert not m["small"].any() and "every parameter of tensor 'small' is zeroed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nnr"):
        sparsify(t, 0.2, importance=imp, scope="per-tensor")
    assert caplog.text == ""
