"""nnr.fl: sparsification, Golomb position coding, the update coders and error feedback."""
import math

import numpy as np
import pytest

import nnr
import nnr.fl as fl
import nnr.fl.sparsify
from nnr.errors import BitstreamError, EncoderConfigError, NNRError
from nnr.fl import golomb
from nnr.fl.sparsify import kept_count, sbc, topk, topk_indices
from nnr_core.quant.reconstruct import step_size

LAYOUT = [("c1.weight", (8, 1, 5, 5)), ("c1.bias", (8,)), ("fc.weight", (64, 256)), ("fc.bias", (64,))]


def update(rng, scale=0.01):
    return {n: rng.normal(0, scale, s).astype(np.float32) for n, s in LAYOUT}


# -- sparsification -------------------------------------------------------------------------------
def test_topk_keeps_the_largest_magnitudes_ties_to_the_lower_index():
    a = np.array([0.1, -0.5, 0.5, 0.2, -0.05], np.float32)
    np.testing.assert_array_equal(topk(a, 0.4), [0, -0.5, 0.5, 0, 0])
    np.testing.assert_array_equal(topk_indices(np.array([1, -1, 1, 1], np.float32), 2), [0, 1])
    assert kept_count(1000, 0.01) == 10 and kept_count(10, 0.01) == 1 and kept_count(3, 1.0) == 3


def test_sbc_keeps_the_sign_with_the_larger_mean():
    # k = 2: positives {3, 1} mean 2; negatives {-4, -2.5} mean 3.25 -> the negatives, at -3.25
    a = np.array([3, -4, 1, -2.5, 0.5, -1], np.float32)
    idx, mean = sbc(a, 2 / 6)
    np.testing.assert_array_equal(idx, [1, 3])
    assert mean == np.float32(-3.25)
    idx, mean = sbc(np.array([0.0, 2.0, 0.0, 1.0], np.float32), 0.5)    # no negatives: the positive set
    np.testing.assert_array_equal(idx, [1, 3])
    assert mean == np.float32(1.5)
    idx, mean = sbc(np.zeros(5, np.float32), 0.5)
    assert idx.size == 0 and mean == 0


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_fraction_out_of_range(bad):
    with pytest.raises(EncoderConfigError, match="fraction"):
        fl.SbcCoder(LAYOUT, bad)


# -- Golomb-Rice positions --------------------------------------------------------------------------
def test_rice_parameter_follows_sbc_formula():
    phi = (1 + math.sqrt(5)) / 2
    for k, n in ((10, 1000), (1, 10 ** 6), (300, 1000)):
        p = k / n
        assert golomb.rice_parameter(k, n) == 1 + math.floor(math.log2(math.log(phi - 1) / math.log(1 - p)))


def test_golomb_hand_derived_bits():
    # positions 2, 3, 9 with b = 1: gaps d-1 = 2, 0, 5 -> q,r = (1,0) (0,0) (2,1): 1 0 0 | 0 0 | 1 1 0 1 + pad
    assert golomb.encode_positions([2, 3, 9], 1) == bytes([0b10000110, 0b10000000])
    pos, n = golomb.decode_positions(bytes([0b10000110, 0b10000000, 0xFF]), 3, 1, 10)
    np.testing.assert_array_equal(pos, [2, 3, 9])
    assert n == 2


@pytest.mark.parametrize("size,k", [(1000, 10), (100000, 1000), (50, 50), (7, 1), (300000, 30)])
def test_golomb_round_trip_near_the_entropy(size, k):
    rng = np.random.default_rng(size + k)
    pos = np.sort(rng.choice(size, k, replace=False))
    b = golomb.rice_parameter(k, size)
    data = golomb.encode_positions(pos, b)
    got, n = golomb.decode_positions(data, k, b, size)
    np.testing.assert_array_equal(got, pos)
    assert n == len(data)
    if k < size:
        p = k / size
        entropy_bits = size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
        assert len(data) * 8 <= 1.05 * entropy_bits + 16


def test_golomb_short_or_out_of_range_data_raises():
    data = golomb.encode_positions([5, 100, 2000], 6)
    with pytest.raises(BitstreamError, match="ends before"):
        golomb.decode_positions(data[:1], 3, 6, 5000)
    with pytest.raises(BitstreamError, match="outside"):
        golomb.decode_positions(data, 3, 6, 1000)


# -- coders -----------------------------------------------------------------------------------------
def coders():
    return [fl.Float32Coder(LAYOUT), fl.DgcCoder(LAYOUT, 0.02), fl.SbcCoder(LAYOUT, 0.02),
            fl.NncCoder(LAYOUT, 0.02, device_id=3), fl.NncCoder(LAYOUT, 0.02, sparsify="topk", hdsp=True),
            fl.NncCoder(LAYOUT, 0.02, selection="global", element_names="index", hdsp=True),
            fl.NncCoder(LAYOUT, 0.02, sparsify="ternary", packing="flat", element_names="index", hdsp=True),
            fl.NncCoder(LAYOUT, 0.02, sparsify="ternary", selection="global")]


@pytest.mark.parametrize("coder", coders(), ids=lambda c: f"{c.name}-{getattr(c, 'sparsify', '')}")
def test_receiver_reconstructs_what_the_sender_says(coder):
    rng = np.random.default_rng(1)
    receiver = coder.decoder()
    for _ in range(4):
        data, sent = coder.encode(update(rng))
        got = receiver.decode(data)
        for n, shape in LAYOUT:
            assert got[n].shape == shape and got[n].dtype == np.float32
            np.testing.assert_array_equal(got[n], sent[n])


def test_sent_values_are_the_methods_choice():
    rng = np.random.default_rng(2)
    u = update(rng)
    _, sent = fl.DgcCoder(LAYOUT, 0.05).encode(u)
    for n, _ in LAYOUT:
        np.testing.assert_array_equal(sent[n], topk(u[n], 0.05))
    _, sent = fl.SbcCoder(LAYOUT, 0.05).encode(u)
    for n, _ in LAYOUT:
        np.testing.assert_array_equal(sent[n], fl.sbc_dense(u[n], 0.05))


def test_nnc_sbc_levels_are_plus_minus_one_on_the_mean():
    rng = np.random.default_rng(3)
    u = update(rng)
    coder = fl.NncCoder(LAYOUT, 0.05)
    data, sent = coder.encode(u)
    for n, _ in LAYOUT:
        idx, mean = sbc(u[n], 0.05)
        qp = fl.qp_for_step(abs(float(mean)), 7)
        delta = np.float32(step_size(qp, 7))
        assert abs(delta / abs(mean) - 1) < 2 ** -8            # the nearest of 128 steps per octave
        expect = np.zeros(u[n].size, np.float32)
        expect[idx] = np.sign(mean) * delta
        np.testing.assert_array_equal(sent[n].reshape(-1), expect)
    # a plain nnr.Decoder of the same stream position gives the same tensors
    dec = nnr.Decoder()
    for t in dec.decode_tensors(data):
        np.testing.assert_array_equal(np.asarray(t.values).reshape(-1), sent[t.name].reshape(-1))


def test_qp_for_step_is_the_nearest_step():
    for step in (1e-3, 0.7, 3.3e-6, 1.0, 2.0, 1.999):
        q = fl.qp_for_step(step, 7)
        best = min(range(q - 3, q + 4), key=lambda c: abs(step_size(c, 7) - step))
        assert q == best


def test_error_feedback_carries_what_was_not_sent():
    rng = np.random.default_rng(4)
    s = fl.FeedbackSender(fl.SbcCoder(LAYOUT, 0.02))
    u1, u2 = update(rng), update(rng)
    _, sent1 = s.send(u1)
    for n, _ in LAYOUT:
        np.testing.assert_array_equal(s.residual[n], u1[n] - sent1[n])
    _, sent2 = s.send(u2)
    for n, _ in LAYOUT:
        np.testing.assert_allclose(s.residual[n], (u1[n] - sent1[n] + u2[n]) - sent2[n], rtol=0, atol=1e-7)
    plain = fl.FeedbackSender(fl.SbcCoder(LAYOUT, 0.02), error_feedback=False)
    plain.send(u1)
    assert plain.residual is None


def test_bad_updates_and_corrupt_messages():
    rng = np.random.default_rng(5)
    u = update(rng)
    for coder in coders():
        bad = dict(u, **{"fc.bias": np.full(64, np.nan, np.float32)})
        with pytest.raises(EncoderConfigError, match="fc.bias"):
            coder.encode(bad)
        with pytest.raises(EncoderConfigError, match="shape"):
            coder.encode(dict(u, **{"fc.bias": np.zeros(63, np.float32)}))
        with pytest.raises(EncoderConfigError, match="no tensor"):
            coder.encode({k: v for k, v in u.items() if k != "fc.bias"})
    for coder in coders():
        data, _ = coder.encode(u)
        receiver = coder.decoder() if coder.name != "nnc" else None
        if receiver is None:
            continue                     # NNC streams: the decoder's own robustness tests cover them
        for cut in (0, 1, len(data) // 2, len(data) - 1):
            with pytest.raises(NNRError):
                receiver.decode(data[:cut])
        with pytest.raises(NNRError):
            receiver.decode(data + b"\x00" * 9)


def test_global_selection_omits_tensors_with_nothing_above_the_threshold():
    rng = np.random.default_rng(6)
    u = update(rng)
    u["fc.weight"][3, :20] = 1.0                  # the 20 largest entries of the model, all in one row
    coder = fl.NncCoder(LAYOUT, 20 / sum(math.prod(s) for _, s in LAYOUT), selection="global",
                        element_names="index")
    data, sent = coder.encode(u)
    expect = np.zeros((64, 256), np.float32)
    expect[3, :20] = np.float32(step_size(fl.qp_for_step(1.0, 7), 7))
    np.testing.assert_array_equal(sent["fc.weight"], expect)
    for n in ("c1.weight", "c1.bias", "fc.bias"):
        assert not np.any(sent[n])
    names = [t.name for t in nnr.Decoder().decode_tensors(data)]
    assert names == ["2"]                         # one unit, named by its layout position
    assert coder.decoder().decode(data)["fc.weight"][3, 0] == expect[3, 0]


def test_global_sbc_takes_the_larger_sign_set_of_each_tensor():
    a = np.array([0.9, -0.8, -0.85, 0.1, 0.05], np.float32)
    idx, mean = fl.sparsify.sbc_of(a, [0, 1, 2])       # positives {0.9}: 0.9; negatives: 0.825
    np.testing.assert_array_equal(idx, [0])
    assert mean == np.float32(0.9)
    idx, mean = fl.sparsify.sbc_of(a, [1, 2, 3])       # positives {0.1}; negatives 0.825
    np.testing.assert_array_equal(idx, [1, 2])
    assert mean == -np.float32((np.float64(np.float32(0.8)) + np.float64(np.float32(0.85))) / 2)
    assert fl.sparsify.global_threshold([a, np.array([2.0, -0.01], np.float32)], 2 / 7) == np.float32(0.9)


def test_ternary_keeps_both_signs_at_the_mean_kept_magnitude():
    # top 3 of 6 by magnitude: -4, 3, -2.5 (mean 19/6); both signs stay, levels -1, +1, -1
    a = np.array([3, -4, 1, -2.5, 0.5, -1], np.float32)
    layout = [("a", (6,))]
    data, sent = fl.NncCoder(layout, 0.5, sparsify="ternary").encode({"a": a})
    delta = np.float32(step_size(fl.qp_for_step(19 / 6, 7), 7))
    np.testing.assert_array_equal(sent["a"], np.array([1, -1, 0, -1, 0, 0], np.float32) * delta)


def test_flat_packing_is_one_unit_of_the_concatenated_update():
    rng = np.random.default_rng(7)
    u = update(rng)
    for n, _ in LAYOUT:
        u[n].reshape(-1)[::7][:3] = 0.5           # kept entries in every tensor
    size = sum(math.prod(s) for _, s in LAYOUT)
    coder = fl.NncCoder(LAYOUT, 30 / size, sparsify="ternary", packing="flat", element_names="index")
    data, sent = coder.encode(u)
    v = np.concatenate([u[n].reshape(-1) for n, _ in LAYOUT])
    idx = topk_indices(v, 30)
    delta = np.float32(step_size(fl.qp_for_step(float(np.mean(np.abs(v[idx].astype(np.float64)))), 7), 7))
    expect = np.zeros(size, np.float32)
    expect[idx] = np.sign(v[idx]) * delta
    tensors = nnr.Decoder().decode_tensors(data)
    assert [(t.name, np.asarray(t.values).shape) for t in tensors] == [("0", (size,))]
    np.testing.assert_array_equal(np.asarray(tensors[0].values), expect)
    np.testing.assert_array_equal(np.concatenate([sent[n].reshape(-1) for n, _ in LAYOUT]), expect)
    assert fl.split_flat(expect, LAYOUT)["fc.weight"].shape == (64, 256)
    # the per-tensor stream of the same choice needs a unit header (and a CABAC flush) per tensor
    assert all(np.any(sent[n]) for n, _ in LAYOUT)
    per_tensor, _ = fl.NncCoder(LAYOUT, 30 / size, sparsify="ternary", selection="global",
                                element_names="index").encode(u)
    assert len(data) < len(per_tensor)
    named = fl.NncCoder(LAYOUT, 30 / size, sparsify="ternary", packing="flat")
    assert [t.name for t in nnr.Decoder().decode_tensors(named.encode(u)[0])] == ["update"]


def test_flat_receiver_refuses_a_stream_of_another_layout():
    other = [("x", (10,))]
    data, _ = fl.NncCoder(other, 0.5, packing="flat", element_names="index").encode({"x": np.arange(10, dtype=np.float32)})
    receiver = fl.NncCoder(LAYOUT, 0.5, packing="flat", element_names="index").decoder()
    with pytest.raises(BitstreamError, match="10 values"):
        receiver.decode(data)
    with pytest.raises(EncoderConfigError, match="packing"):
        fl.NncCoder(LAYOUT, 0.5, packing="rows")


def test_schedule_sets_the_kept_fraction_per_message():
    rng = np.random.default_rng(8)
    size = sum(math.prod(s) for _, s in LAYOUT)
    coder = fl.NncCoder(LAYOUT, 1 / 16, sparsify="ternary", packing="flat", schedule=((0, 0.5), (2, 2)))
    kept = [sum(int(np.count_nonzero(a)) for a in coder.encode(update(rng))[1].values()) for _ in range(4)]
    assert kept == [math.ceil(size / 32), math.ceil(size / 32), size // 8, size // 8]      # size = 16656
    for bad in (((1, 1.0),), ((0, 1.0), (0, 2.0)), ((0, 0.0),), ((0, size),), "x"):
        with pytest.raises(EncoderConfigError, match="schedule"):
            fl.NncCoder(LAYOUT, 40 / size, schedule=bad)
