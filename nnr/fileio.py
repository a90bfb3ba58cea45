"""Atomic file output: a failed write leaves no half-written file behind."""
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_output(path, mode="wb"):
    """Yield a temporary file next to `path`; rename it over `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nnr-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_npz(path, tensors: dict) -> None:
    """Write {name: ndarray} as an uncompressed .npz, atomically."""
    import numpy as np
    with atomic_output(path) as f:
        np.savez(f, **tensors)
