"""Uniform reconstruction (NNC-CABAC-QUANT.md §9.2): the in-place form nnr.decode uses gives the
same float32 values as the copying one."""
import numpy as np
import pytest

from nnr.errors import SyntaxValueError
from nnr_core.quant import reconstruct
from nnr_core.quant.reconstruct import reconstruct_uniform


@pytest.mark.parametrize("qp", [-75, -32, 0, 17])
def test_inplace_equals_copy(qp):
    rng = np.random.default_rng(qp & 0xFF)
    n = 3 * reconstruct._CHUNK + 123                   # several chunks and a partial one
    levels = rng.integers(-(1 << 31), 1 << 31, size=n, dtype=np.int64).astype(np.int32)
    levels[:6] = [0, 1, -1, (1 << 24) + 1, -(1 << 31), (1 << 31) - 1]
    levels = levels.reshape(3, -1) if n % 3 == 0 else levels
    want = reconstruct_uniform(levels.copy(), qp, 2)
    mine = levels.copy()
    got = reconstruct_uniform(mine, qp, 2, inplace=True)
    assert got.dtype == np.float32 and got.shape == levels.shape
    assert np.shares_memory(got, mine)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))


def test_inplace_overflow_raises():
    with pytest.raises(SyntaxValueError):
        reconstruct_uniform(np.array([0, 1 << 30], dtype=np.int32), 4 * 100, 2, inplace=True)
