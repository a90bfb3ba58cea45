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
