"""Reconstruction (CABAC §9.2): the uniform kernel nnr.decode uses, in place or into a
new array, gives numpy's fl32(Delta) * fl32(i) bit for bit; codebook values are the exact product
Codebook[k] * Delta rounded once."""
from fractions import Fraction

import numpy as np
import pytest

import nnr
from nnr.errors import SyntaxValueError
from nnr_core.quant.reconstruct import reconstruct_codebook, reconstruct_uniform, step_size_f32
from nnr_core.syntax.constants import NNR_NDU


@pytest.mark.parametrize("qp", [-75, -32, 0, 17])
def test_kernel_equals_numpy(qp):
    rng = np.random.default_rng(qp & 0xFF)
    levels = rng.integers(-(1 << 31), 1 << 31, size=3 * 70001, dtype=np.int64).astype(np.int32)
    levels[:6] = [0, 1, -1, (1 << 24) + 1, -(1 << 31), (1 << 31) - 1]
    levels = levels.reshape(3, -1)
    with np.errstate(over="ignore"):
        want = levels.astype(np.float32) * step_size_f32(qp, 2)
    if not np.all(np.isfinite(want)):
        with pytest.raises(SyntaxValueError):
            reconstruct_uniform(levels.copy(), qp, 2)
        return
    copy = reconstruct_uniform(levels, qp, 2)
    assert not np.shares_memory(copy, levels)
    mine = levels.copy()
    got = reconstruct_uniform(mine, qp, 2, inplace=True)
    strided = reconstruct_uniform(np.asfortranarray(levels), qp, 2)      # the numpy path
    for out in (copy, got, strided):
        assert out.dtype == np.float32 and out.shape == levels.shape
        assert np.array_equal(out.view(np.int32), want.view(np.int32))
    assert np.shares_memory(got, mine)


@pytest.mark.parametrize("inplace", [False, True])
def test_overflow_raises(inplace):
    with pytest.raises(SyntaxValueError):
        reconstruct_uniform(np.array([0, 1 << 30], dtype=np.int32), 4 * 100, 2, inplace=inplace)
    with pytest.raises(SyntaxValueError):
        reconstruct_uniform(np.asfortranarray(np.array([[0, -(1 << 30)]], dtype=np.int32)), 4 * 100, 2)


def _exact_delta(qp, qp_density):
    """Delta = (2^qp_density + qp mod 2^qp_density) * 2^(qp >> qp_density) / 2^qp_density, as a
    fraction (CABAC §9.1), computed apart from nnr's step_size."""
    k = 1 << qp_density
    return Fraction(k + qp % k, k) * Fraction(2) ** (qp >> qp_density)


def _rounded(value: Fraction, dtype):
    """`value` rounded once to dtype: float() rounds a fraction correctly to float64; a value that
    float64 holds exactly is then rounded once to float32."""
    f = float(value)
    if dtype == np.float32:
        assert Fraction(f) == value          # exact in float64, so the float32 rounding is the only one
    return dtype(f)


@pytest.mark.parametrize("qp,qp_density", [(-31, 2), (-37, 3), (5, 1), (-1, 7)])
def test_codebook_values_are_exact_for_large_entries(qp, qp_density):
    """Entries beyond float32's 24-bit mantissa (up to 2^43): the output is Codebook[k] * Delta
    computed exactly (with fractions) and rounded once; float32 arithmetic would round them."""
    codebook = [-(1 << 43) + 3, -(1 << 31) + 1, -(1 << 24) - 1, -5, 0, 7, (1 << 24) + 1, (1 << 30) + 3,
                (1 << 40) + 12345]
    zero = codebook.index(0)
    symbols = np.arange(len(codebook), dtype=np.int32) - zero
    delta = _exact_delta(qp, qp_density)
    for dtype in (np.float64, np.float32):
        got = reconstruct_codebook(symbols, codebook, zero, qp, qp_density, dtype)
        want = [_rounded(c * delta, dtype) for c in codebook]
        assert got.dtype == dtype
        assert got.tolist() == [float(w) for w in want]
    with np.errstate(over="ignore"):
        float32_product = np.asarray(codebook, np.float32) * np.float32(float(delta))
    assert float32_product.astype(np.float64).tolist() != reconstruct_codebook(
        symbols, codebook, zero, qp, qp_density).tolist()          # the test can tell the two apart


def test_decoded_codebook_tensor_is_exact():
    """Through the encoder and the decoder: a codebook tensor whose levels pass 2^24 decodes to the
    exact products of its header's Codebook and the step size."""
    rng = np.random.default_rng(3)
    w = rng.choice(np.array([-3.1, -1.3, 0.0, 1.7, 2.9, 5.3], np.float32), (12, 10))
    qp, qp_density = -95, 2                   # Delta = 5 * 2^-26: levels of about 2^24 .. 2^26
    data = nnr.encode({"w": w}, codebook=True, dq=False, qp=qp, qp_density=qp_density)
    dec = nnr.Decoder()
    got = dec.decode(data)["w"]
    (unit,) = [u for u in dec.units if u.nnr_unit_type == NNR_NDU]
    fields = unit.fields
    assert fields.get("codebook_present_flag") == 1, "the encoder chose uniform: the test needs a codebook"
    codebook = fields["codebook"]["Codebook"]
    assert max(abs(c) for c in codebook) > 1 << 24
    step = _exact_delta(dec.tensors[0].qp, qp_density)
    symbols = dec.tensors[0].levels.reshape(-1) + fields["codebook"]["CbZeroOffset"]
    want = [float(codebook[k] * step) for k in symbols.tolist()]
    assert got.dtype == np.float64 and got.reshape(-1).tolist() == want
