"""The decoder's model output (nnr/recompose.py): low-rank pairs as W = G·H (HLS §9.4) by default, the
members in decode_tensors and with recompose=False; local scaling into the weight rows on request."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.errors import ConstraintViolationError
from nnr.recompose import tensor_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [os.path.join(REPO, "bitstreams", "nnr", n, "stream.nnr") for n in ("decomposition_pair",
                                                                            "decomposition_pair_scan1")]


@pytest.mark.parametrize("path", PAIRS)
def test_pair_decodes_to_the_product(path):
    data = open(path, "rb").read()
    members = nnr.Decoder().decode_tensors(data)
    assert [(t.name, t.role, t.values.shape) for t in members] == [("W_G", "G", (6, 2)), ("W_H", "H", (2, 8))]
    g, h = (t.values.astype(np.float64) for t in members)
    # by hand: W[i, j] = G[i, 0] H[0, j] + G[i, 1] H[1, j], each product exact in float64, rounded once
    want = np.array([[g[i, 0] * h[0, j] + g[i, 1] * h[1, j] for j in range(8)] for i in range(6)]).astype(np.float32)
    out = nnr.decode(data)
    assert list(out) == ["W"] and out["W"].dtype == np.float32
    assert np.array_equal(out["W"], want)
    assert list(nnr.decode(data, recompose=False)) == ["W_G", "W_H"]


def test_nnr_decode_cli(tmp_path):
    def run(*flags):
        out = tmp_path / "o.npz"
        r = subprocess.run([sys.executable, "-m", "nnr.cli.nnr_decode", PAIRS[0], "-o", out, "-q", *flags],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        with np.load(out) as z:
            return sorted(z.files)
    assert run() == ["W"]
    assert run("--no-recompose") == ["W_G", "W_H"]


def test_local_scaling_into_the_rows():
    t = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 16,
         "fc.weight_scaling": np.array([1.0, 2.0, 0.5], np.float32),
         "fc.bias": np.array([0.25, 0.5, 0.75], np.float32)}
    opt = {"block_identifier": dict.fromkeys(t, "fc"),
           "parameter_type": {"fc.weight": "weight", "fc.weight_scaling": "weight.ls", "fc.bias": "bias"}}
    data = nnr.encode(t, qp=-60, nonweight_qp=-60, dq=False, block_id_and_param_type=opt)
    plain = nnr.decode(data)
    assert np.array_equal(plain["fc.weight"], t["fc.weight"])      # exact on this grid
    scaled = nnr.decode(data, lsa=True)
    assert sorted(scaled) == ["fc.bias", "fc.weight"]
    assert np.array_equal(scaled["fc.weight"], t["fc.weight"] * np.array([[1.0], [2.0], [0.5]], np.float32))


def test_recomposed_name_collision():
    data = open(PAIRS[0], "rb").read()
    members = nnr.Decoder().decode_tensors(data)
    import dataclasses
    w = dataclasses.replace(members[0], name="W", role="T")
    with pytest.raises(ConstraintViolationError, match="also a decoded tensor"):
        tensor_dict([w] + members)
