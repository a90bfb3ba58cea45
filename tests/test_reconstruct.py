"""Uniform reconstruction (NNC-CABAC-QUANT.md §9.2): the nogil kernel nnr.decode uses, in place or
into a new array, gives numpy's fl32(Delta) * fl32(i) bit for bit."""
import numpy as np
import pytest

from nnr.errors import SyntaxValueError
from nnr_core.quant.reconstruct import reconstruct_uniform, step_size_f32


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
