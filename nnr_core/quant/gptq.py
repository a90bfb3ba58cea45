"""Output-aware rounding (GPTQ): a weight tensor's levels chosen column by column, each column's
rounding error fed forward onto the columns not yet rounded through the inverse of the layer's input
second moments H = sum x x^T, so that the layer's output error ||(W - W') X|| stays small (Frantar et
al., "GPTQ", ICLR 2023, Algorithm 1, with its lazy block updates and "act order").

An encoder choice beyond the reference (CABAC §9.3: the levels are not normative): the levels lie on
the step of the tensor's QP (CABAC §9.2) and are coded as any others, without dependent quantization
(the trellis's state follows the scan, the feedback the columns), so dq_flag is 0 for these tensors.

H is (d, d) for a weight whose rows all see the same inputs (d = parameters per row: a linear
layer's inputs, a convolution's C_in * kernel patch), or (g, d, d) for a grouped convolution: rows
r * g // rows use H[r * g // rows] (a depthwise convolution: one H per channel).

The loop runs over the d columns (Python), each step one vector operation over all rows and groups,
and every BLOCK columns one matrix product updates the rest (numpy, BLAS).
"""
import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core.quant.reconstruct import step_size

DAMP = 0.01         # added to H's diagonal, times its mean (the GPTQ paper's choice)
BLOCK = 128         # columns rounded between two updates of the columns after them


def check_hessian(name, shape, h) -> np.ndarray:
    """h as a float64 (g, d, d) array matching a tensor of `shape`, or EncoderConfigError."""
    a = np.asarray(h)
    if a.dtype.kind not in "fiu":
        raise EncoderConfigError(f"hessians[{name!r}] must be a numeric array, not {a.dtype}")
    a = a.astype(np.float64)
    if len(shape) < 2:
        raise EncoderConfigError(f"hessians[{name!r}]: tensor {name!r} of shape {tuple(shape)} has no rows "
                                 "and columns to round with a layer's inputs")
    rows, d = shape[0], int(np.prod(shape[1:]))
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (d, d) or a.shape[0] < 1 or rows % a.shape[0]:
        raise EncoderConfigError(f"hessians[{name!r}] has shape {np.shape(h)}; tensor {name!r} of shape "
                                 f"{tuple(shape)} needs ({d}, {d}) or (groups, {d}, {d}) with groups dividing {rows}")
    if not np.all(np.isfinite(a)):
        raise EncoderConfigError(f"hessians[{name!r}] holds NaN or infinite values")
    diag = np.diagonal(a, axis1=1, axis2=2)
    if np.any(diag < 0) or not np.allclose(a, a.transpose(0, 2, 1), rtol=1e-6, atol=0):
        raise EncoderConfigError(f"hessians[{name!r}] is not a symmetric matrix with a non-negative diagonal "
                                 "(a sum of x x^T over the layer's inputs)")
    return a


class Factor:
    """What rounding with one H needs at any QP: the column order and the upper Cholesky factor of
    the damped H^-1 (computed once per tensor)."""

    def __init__(self, name, h, rows, act_order=True):
        g, d, _ = h.shape
        self.rows, self.width = rows, d
        h = h.copy()
        diag = np.diagonal(h, axis1=1, axis2=2)
        dead = diag <= 0                      # inputs the calibration never saw: rounded plainly
        mean = np.array([dg[~dd].mean() if np.any(~dd) else 1.0 for dg, dd in zip(diag, dead)])
        # act order: the columns of the largest inputs first (one order for all groups: g == 1)
        self.perm = np.argsort(-diag[0], kind="stable") if g == 1 and act_order else None
        if self.perm is not None:
            h = h[:, self.perm][:, :, self.perm]
            dead = dead[:, self.perm]
        idx = np.arange(d)
        for damp in (DAMP, 0.1, 1.0):
            hd = h.copy()
            hd[:, idx, idx] += damp * mean[:, None]
            hd[:, idx, idx] = np.where(dead, 1.0, hd[:, idx, idx])
            try:
                lower = np.linalg.cholesky(hd)
                inv = np.linalg.inv(lower)                              # H^-1 = L^-T L^-1
                hinv = inv.transpose(0, 2, 1) @ inv
                self.u = np.linalg.cholesky(hinv).transpose(0, 2, 1)   # upper: H^-1 = U^T U
                break
            except np.linalg.LinAlgError:
                continue
        else:
            raise EncoderConfigError(f"hessians[{name!r}] is not positive semi-definite: no damping up to "
                                     "its mean diagonal makes it factorizable")
        self.groups = g

    def fits(self, shape) -> bool:
        """Whether rows of this shape can be rounded with H: whole rows (all of a grouped layer's)."""
        width = int(np.prod(shape[1:])) if len(shape) > 1 else -1
        return width == self.width and (self.groups == 1 or shape[0] == self.rows)


def gptq_levels(w, qp, qp_density, factor: Factor) -> np.ndarray:
    """int32 levels of w (flat, w's order) on the step of `qp`, rounded column by column with the
    error fed forward; no level exceeds plain rounding's largest magnitude by more than 1 (the
    overflow guard's margin, CABAC §9.3, holds)."""
    rows = w.shape[0]
    g = factor.groups
    delta = step_size(int(qp), qp_density)
    flat = np.asarray(w, dtype=np.float64).reshape(rows, -1)
    peak = float(np.floor(np.abs(flat).max() / delta + 0.5)) + 1.0 if flat.size else 0.0
    if factor.perm is not None:
        flat = flat[:, factor.perm]
    m, d = rows // g, flat.shape[1]
    W = flat.reshape(g, m, d).copy()
    U = factor.u
    L = np.empty((g, m, d), dtype=np.float64)
    for i0 in range(0, d, BLOCK):
        i1 = min(i0 + BLOCK, d)
        Wb = W[:, :, i0:i1]
        E = np.empty_like(Wb)
        for j in range(i1 - i0):
            col = Wb[:, :, j]
            lev = np.clip(np.floor(np.abs(col) / delta + 0.5), 0.0, peak) * np.sign(col)
            L[:, :, i0 + j] = lev
            err = (col - lev * delta) / U[:, i0 + j, i0 + j][:, None]
            E[:, :, j] = err
            if j + 1 < i1 - i0:
                Wb[:, :, j + 1:] -= err[:, :, None] * U[:, None, i0 + j, i0 + j + 1:i1]
        if i1 < d:
            W[:, :, i1:] -= E @ U[:, i0:i1, i1:]
    L = L.reshape(rows, d)
    if factor.perm is not None:
        L = L[:, np.argsort(factor.perm)]
    return np.ascontiguousarray(L.reshape(-1)).astype(np.int32)

