"""Encoder input validation and option checks: clear EncoderConfigError naming the tensor."""
import os

import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError

W = np.random.default_rng(0).normal(0, 0.05, (16, 8)).astype(np.float32)


@pytest.mark.parametrize("value,match", [
    (np.array([[1.0, np.nan]], dtype=np.float32), "non-finite"),
    (np.array([[np.inf, 1.0]], dtype=np.float32), "non-finite"),
    (np.zeros((0, 4), dtype=np.float32), "empty"),
    (np.float32(3.0) * np.ones(()), "0-dimensional"),
    (np.array([1 + 2j, 3j]), "dtype complex"),
    (np.array(["a", "b"], dtype=object), "dtype object"),
    (np.array([2**40], dtype=np.int64), "do not fit int32"),
    (np.array([2**32 - 1], dtype=np.uint32), "do not fit int32"),
])
def test_bad_tensors_are_named(value, match):
    with pytest.raises(EncoderConfigError, match=match) as ei:
        nnr.encode({"layer.w": W, "bad.tensor": value})
    assert "bad.tensor" in str(ei.value)


@pytest.mark.parametrize("options,match", [
    (dict(qp_density=8), "qp_density"),
    (dict(qp_density=-1), "qp_density"),
    (dict(scan_order=5), "scan_order"),
    (dict(cabac_unary_length_minus1=256), "cabac_unary_length_minus1"),
    (dict(bitdepth=0), "bitdepth"),
    (dict(bitdepth=40), "bitdepth"),
    (dict(qp=10**6), "qp"),
    (dict(qp=1.5), "qp"),
    (dict(general_profile_idc=2), "general_profile_idc"),
    (dict(lambda_scale=-1.0), "lambda_scale"),
    (dict(qp_per_tensor={"w": 99999}), "qp_per_tensor"),
    (dict(no_such_option=1), "unknown encoder option"),
])
def test_bad_options(options, match):
    with pytest.raises(EncoderConfigError, match=match):
        nnr.encode(W, **options)


def test_bad_container():
    with pytest.raises(EncoderConfigError):
        nnr.encode([1, 2, 3])
    with pytest.raises(EncoderConfigError):
        nnr.encode({})


def test_incremental_needs_profile1():
    with pytest.raises(EncoderConfigError, match="general_profile_idc 1"):
        nnr.Encoder(general_profile_idc=0).encode(W, incremental=True)


def test_raw_float_round_trip_is_exact():
    rng = np.random.default_rng(5)
    t = {"w": rng.normal(0, 1, (7, 5)).astype(np.float32), "b": rng.normal(0, 1, (5,)).astype(np.float32)}
    data = nnr.encode(t, raw_float=("b",))
    dec = nnr.Decoder()
    out = dec.decode(data)
    assert np.array_equal(out["b"], t["b"]) and out["b"].dtype == np.float32
    assert [u.fields.get("nnr_compressed_data_unit_payload_type") for u in dec.units[3:]] == [1, 2]
    with pytest.raises(EncoderConfigError, match="integer"):
        nnr.encode({"i": np.arange(4, dtype=np.int32)}, raw_float=("i",))


def test_encoding_is_deterministic_and_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(6)
    t = {"a.weight": rng.normal(0, 0.05, (33, 17)).astype(np.float32), "a.bias": rng.normal(0, 0.1, (33,)).astype(np.float32)}
    assert nnr.encode(t) == nnr.encode(t)
    assert list(tmp_path.iterdir()) == []


def test_single_array_is_named_0_and_decodes_within_step():
    w = np.random.default_rng(7).normal(0, 0.05, (20, 30)).astype(np.float32)
    out = nnr.decode(nnr.encode(w, dq=False))
    assert list(out) == ["0"]
    assert np.abs(out["0"] - w).max() <= 2.0 ** -8 / 2      # qp -32, qp_density 2: Delta = 2^-8


def test_qp_outside_the_offset_range_is_rebased_not_wrapped():
    rng = np.random.default_rng(8)
    # b small enough that QP -75 (Delta = 3 * 2^-39 at qp_density 1) needs no overflow guard
    t = {"w": rng.normal(0, 0.05, (8, 8)).astype(np.float32), "b": rng.normal(0, 0.001, (8,)).astype(np.float32)}
    dec = nnr.Decoder()
    out = dec.decode(nnr.encode(t, qp_density=1, qp=-40, nonweight_qp=-75, dq=False))
    assert dec.units[1].fields["mps_quantization_parameter"] != 0
    assert [t.qp for t in dec.tensors] == [-40, -75]
    with pytest.raises(EncoderConfigError, match="span"):
        nnr.encode(t, qp_density=0, qp=40, nonweight_qp=-60)
