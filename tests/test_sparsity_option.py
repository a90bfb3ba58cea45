"""nnr.encode(sparsity=...): the weight tensors pruned by nnr.rd.sparsify's rule before quantization,
and every zero, pruned or not, decoded as exactly 0 (the trellis pinned); alone, with a budget and
with importance; the reference decodes the streams alike."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd.sparsify import sparsify
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes


def model(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(0, 0.1, (32, 8, 3, 3)).astype(np.float32),
            "conv.bias": rng.normal(0, 0.01, 32).astype(np.float32),
            "fc.weight": rng.normal(0, 0.03, (64, 288)).astype(np.float32)}


def importance(tensors, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.gamma(0.5, size=v.shape).astype(np.float32) for k, v in tensors.items()}


@pytest.mark.parametrize("dq", [True, False])
@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_pruned_parameters_decode_as_exact_zeros(dq, structured, weighted):
    tensors = model()
    imp = importance(tensors) if weighted else None
    _, masks = sparsify(tensors, 0.6, structured=structured, importance=imp)
    opts = dict(importance=imp, dq=dq, lambda_scale=1.0 if weighted else 0.0)
    dec = nnr.decode(nnr.encode(tensors, sparsity=0.6, sparsity_structured=structured, **opts))
    assert set(masks) == {"conv.weight", "fc.weight"}
    if not structured:      # one budget over both tensors (global scope)
        assert sum(np.count_nonzero(~k) for k in masks.values()) == round(0.6 * sum(k.size for k in masks.values()))
    for name, keep in masks.items():
        assert np.all(dec[name][~keep] == 0.0), name
    assert np.array_equal(dec["conv.bias"], nnr.decode(nnr.encode(tensors, **opts))["conv.bias"])


def test_the_trellis_moves_zeros_unless_pinned():
    rng = np.random.default_rng(4)
    w = rng.normal(0, 0.05, (128, 256)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0.0
    zeros = w == 0
    plain = nnr.decode(nnr.encode({"w": w}))["w"]
    pinned = nnr.decode(nnr.encode({"w": w}, sparsity=0.0))["w"]
    assert np.count_nonzero(plain[zeros]) > 0          # what pinning is for (the reference's trellis)
    assert np.all(pinned[zeros] == 0.0)
    free = nnr.decode(nnr.encode({"w": w}, dq=False))["w"]
    assert np.all(free[zeros] == 0.0)                  # the uniform quantizer never moves a zero


def test_sparsity_with_a_budget_fits_it():
    tensors = model()
    n = sum(v.size for v in tensors.values())
    for extra in ({}, {"importance": importance(tensors)}):
        data = nnr.encode(tensors, sparsity=0.5, target_bpp=1.5, **extra)
        assert 0.995 * int(1.5 * n / 8) <= len(data) <= int(1.5 * n / 8)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.5"])
def test_bad_sparsity(bad):
    with pytest.raises(EncoderConfigError, match="sparsity"):
        nnr.encode(model(), sparsity=bad)


def test_sparsity_needs_the_uniform_or_trellis_quantizer():
    with pytest.raises(EncoderConfigError, match="sparsity"):
        nnr.encode(model(), sparsity=0.5, codebook=True)


REFERENCE, WHY = find_reference()


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_the_reference_decodes_sparse_streams(tmp_path):
    tensors = model()
    streams = {"dq": nnr.encode(tensors, sparsity=0.7),
               "rows-budget": nnr.encode(tensors, sparsity=0.4, sparsity_structured=True, target_bpp=2.0),
               "imp-urq": nnr.encode(tensors, sparsity=0.5, importance=importance(tensors), dq=False)}
    for name, (kind, out) in reference_decodes(streams, tmp_path).items():
        assert kind == "decoded", out
        assert_same_tensors(nnr.decode(streams[name]), out)
