"""The annotated streams of HLS §16 decode to the values that section states."""
import os

import numpy as np
import pytest

import nnr

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams", "hls-examples")

# HLS §16.1: levels and step sizes as the section states them
W_LEVELS = [-74, -62, -47, -34, -21, -7, 7, 21, 35, 48, 62, 75]
W_DELTA = 6 * 2.0 ** -12          # QP -38
B_LEVELS = [209716, -104858, 0, 52429]
B_DELTA = 5 * 2.0 ** -21          # QP -75


def read(name):
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


def uniform(levels, delta, shape):
    return (np.array(levels, dtype=np.float32) * np.float32(delta)).reshape(shape)


def check_fc(out):
    assert np.array_equal(out["fc.weight"], uniform(W_LEVELS, W_DELTA, (4, 3)))
    assert np.array_equal(out["fc.bias"], uniform(B_LEVELS, B_DELTA, (4,)))
    assert out["fc.weight"].dtype == np.float32


def test_16_1_profile1():
    out = nnr.decode(read("16.1_profile1_fc.nnc"))
    assert list(out) == ["fc.weight", "fc.bias"]
    check_fc(out)


def test_16_2_profile0_written_by_nncodec2():
    data = read("16.2_profile0_fc.nnc")
    check_fc(nnr.decode(data, profile0_variant="nncodec2"))
    # The default edition-1 variant (NNCodec 1.x) must not silently return these values.
    with pytest.raises(nnr.EntropyDecodingError):
        nnr.decode(data)


def test_16_3_entry_points_match_payload():
    dec = nnr.Decoder()
    out = dec.decode(read("16.3_scan1_entrypoints.nnc"))
    assert out["w"].shape == (20, 10)
    ndu = dec.units[-1].fields
    assert list(zip(ndu["BitOffsetDelta"], ndu["ep_arith_value"], ndu["ep_dq_state"])) == [(531, 57, 2), (530, 50, 0)]


def test_16_3_wrong_entry_point_is_rejected():
    data = bytearray(read("16.3_scan1_entrypoints.nnc"))
    # HLS §16.3: the first ep_arith_value (57) is the byte at 0x1f; make it 58
    assert data[0x1F] == 57
    data[0x1F] = 58
    with pytest.raises(nnr.EntropyDecodingError, match="entry point"):
        nnr.decode(bytes(data))


def test_16_4_block_weight_bias():
    dec = nnr.Decoder()
    out = dec.decode(read("16.4_block_weight_bias.nnc"))
    check_fc(out)
    assert [t.role for t in dec.tensors] == ["BI", "W"]      # payload order: bias first


def test_16_5_incremental_tca():
    dec = nnr.Decoder()
    r1 = dec.decode_tensors(read("16.5_incremental_round1.nnc"))
    w = next(t for t in r1 if t.name == "fc.weight")
    assert w.qp == -30
    assert w.levels.reshape(-1).tolist() == [-18, -16, -13, -9, -5, -2, 1, 5, 9, 12, 15, 18]
    assert np.array_equal(w.values, uniform(w.levels.reshape(-1), 6 * 2.0 ** -10, (4, 3)))
    r2 = dec.decode(read("16.5_incremental_round2_tca.nnc"))
    assert list(r2) == ["fc.weight", "fc.bias"]              # the omitted bias comes back as zeros
    assert r2["fc.weight"].shape == (4, 3)


def test_16_5_round2_needs_the_reference():
    with pytest.raises(nnr.ConstraintViolationError, match="temporal_context_modeling_flag"):
        nnr.decode(read("16.5_incremental_round2_tca.nnc"))


def test_16_6_codebook():
    dec = nnr.Decoder()
    out = dec.decode(read("16.6_codebook.nnc"))
    codebook = [-150, -123, -96, -68, -41, -14, 14, 41, 68, 96, 123, 150]
    symbols = list(range(-3, 9))
    weight = next(t for t in dec.tensors if t.name == "fc.weight")
    assert weight.qp == -42
    assert weight.levels.reshape(-1).tolist() == symbols
    delta = 6 * 2.0 ** -13        # QP -42, qp_density 2: mul 4 + 2, shift -11
    want = np.array([codebook[s + 3] * delta for s in symbols]).reshape(4, 3)
    assert out["fc.weight"].dtype == np.float64
    assert np.array_equal(out["fc.weight"], want)
    bias = next(t for t in dec.tensors if t.name == "fc.bias")
    assert bias.qp == -79 and bias.levels.tolist() == [3, 0, 1, 2]
    bias_cb = [-209715, 0, 104858, 419430]
    delta_b = 5 * 2.0 ** -22      # QP -79: mul 4 + 1, shift -20
    assert np.array_equal(out["fc.bias"], np.array([bias_cb[s] * delta_b for s in (3, 0, 1, 2)]))
    f32 = nnr.decode(read("16.6_codebook.nnc"), codebook_dtype=np.float32)
    assert f32["fc.weight"].dtype == np.float32
    assert np.array_equal(f32["fc.weight"], want.astype(np.float32))


def test_16_7_raw_float():
    out = nnr.decode(read("16.7_raw_float_handbuilt.nnc"))
    assert out["fc.bias"].dtype == np.float32
    assert out["fc.bias"].tolist() == [0.5, -0.25, 0.0, 0.125]


def test_16_8_parameter_sets_only():
    dec = nnr.Decoder()
    assert dec.decode(read("16.8_mps_perfmap_handbuilt_STR_MPS_only.nnc")) == {}
    mps = dec.units[1].fields
    assert mps["base_model_id"] == "resnet" and mps["performance_metric_type"] == "top1"
    assert mps["mps_quantization_parameter"] == -5
    assert mps["validation_set_performance"] == float(np.float32(0.7))


def test_16_11_int():
    out = nnr.decode(read("16.11_int.nnc"))
    assert out["cnt"].dtype == np.int32
    assert out["cnt"].tolist() == [3, -1, 0, 7]


def test_16_5_omitted_update_is_reported_as_zero():
    dec = nnr.Decoder()
    dec.decode(read("16.5_incremental_round1.nnc"))
    depth_before = dec.state.tensors["fc.bias"].depth
    r2 = dec.decode_tensors(read("16.5_incremental_round2_tca.nnc"))
    bias = next(t for t in r2 if t.name == "fc.bias")
    assert bias.omitted and bias.values.dtype == np.float32
    assert np.array_equal(bias.values, np.zeros(4, np.float32))
    assert dec.state.tensors["fc.bias"].depth == depth_before      # no state update for it
    assert not next(t for t in r2 if t.name == "fc.weight").omitted
