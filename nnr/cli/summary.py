"""The closing summary of nnr_encode (and its ONNX branch): sizes at the input's own dtypes, the
error of every tensor in absolute and relative terms (RMSE / RMS of the tensor), and a warning for
each tensor the chosen QP destroys: decoded to all zeros, or relative RMSE above a bound (nnr_encode's
--max-relative-error; nnr.cli.modes says what each warning advises)."""
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

_ITEMSIZE = {"bfloat16": 2, "qint8": 1, "quint8": 1, "qint32": 4}


def dtype_bytes(name) -> int:
    """Bytes per element of a dtype name as the model file holds it (bfloat16 = 2, bool = 1)."""
    return _ITEMSIZE.get(str(name)) or np.dtype(name).itemsize


@dataclass
class TensorError:
    """The coding error of one tensor."""

    name: str
    dtype: str
    size: int
    qp: Optional[int]
    max_abs: float
    sum_abs: float
    sum_sq: float        # sum of the squared errors
    ref_sq: float        # sum of the squared original values
    zeroed: bool         # nonzero before, all zeros after

    @property
    def rmse(self):
        return float(np.sqrt(self.sum_sq / max(self.size, 1)))

    @property
    def rms(self):
        return float(np.sqrt(self.ref_sq / max(self.size, 1)))

    @property
    def relative(self):
        """RMSE / RMS of the tensor (nnr.rd.sweep.relative_of: 0 for an exact tensor, inf for an error on
        an all-zero one)."""
        from nnr.rd.sweep import relative_of
        return relative_of(self.sum_sq, self.ref_sq)


def measure(originals: dict, decoded: dict, dtypes=None, qps=None) -> list:
    """TensorError of every tensor of `originals` against its decoded twin (one tensor in float64
    at a time)."""
    rows = []
    for name, a in originals.items():
        a64 = np.asarray(a, dtype=np.float64)
        b = np.asarray(decoded[name])
        err = b.astype(np.float64).reshape(a64.shape) - a64
        rows.append(TensorError(
            name, str((dtypes or {}).get(name, np.asarray(a).dtype.name)), a64.size, (qps or {}).get(name),
            float(np.abs(err).max(initial=0.0)), float(np.abs(err).sum()), float(np.square(err).sum()),
            float(np.square(a64).sum()), bool(np.any(a64) and not np.any(b))))
    return rows


def error_lines(rows) -> list:
    """The summary's error lines: absolute over all parameters, relative overall and worst tensor."""
    n = max(sum(r.size for r in rows), 1)
    sum_sq, ref_sq = sum(r.sum_sq for r in rows), sum(r.ref_sq for r in rows)
    lines = [f"error               max {max((r.max_abs for r in rows), default=0.0):.4g}  "
             f"mean {sum(r.sum_abs for r in rows) / n:.4g}  rmse {np.sqrt(sum_sq / n):.4g}"]
    overall = np.sqrt(sum_sq / ref_sq) if ref_sq > 0 else 0.0
    worst = max(rows, key=lambda r: r.relative, default=None)
    tail = f"; worst tensor {worst.relative:.4g} ({worst.name})" if worst is not None and worst.relative else ""
    lines.append(f"relative error      {overall:.4g} (rmse / rms){tail}")
    return lines


def tensor_table(rows) -> list:
    """One line per tensor (nnr_encode -v)."""
    width = max([len(r.name) for r in rows] + [6])
    lines = [f"{'tensor':<{width}}  {'dtype':<8} {'qp':>5} {'max err':>10} {'rmse':>10} {'rms':>10} {'rmse/rms':>9}"]
    for r in rows:
        qp = "-" if r.qp is None else str(r.qp)
        lines.append(f"{r.name:<{width}}  {r.dtype:<8} {qp:>5} {r.max_abs:>10.4g} {r.rmse:>10.4g} "
                     f"{r.rms:>10.4g} {r.relative:>9.4g}")
    return lines


def warnings(rows, advice, limit) -> list:
    """A line for each tensor decoded to all zeros or with relative RMSE above limit(row); advice(row)
    says what to change (e.g. "--qp -40 or lower keeps it within relative RMSE 0.1")."""
    lines = []
    for r in rows:
        at = f" at qp {r.qp}" if r.qp is not None else ""
        if r.zeroed:
            lines.append(f"warning: tensor {r.name!r} decodes to all zeros{at} (its RMS is {r.rms:.3g}); "
                         f"{advice(r)}")
        elif r.relative > limit(r):
            lines.append(f"warning: tensor {r.name!r} has relative RMSE {r.relative:.3g} > {limit(r):g}{at}; "
                         f"{advice(r)}")
    return lines


def report(prog, head, rows, tail, *, verbose=False, advice, limit, notes=()):
    """Print the summary (head lines, error lines, tail lines; with verbose the tensor table) on
    stdout, and the notes, then the warnings, on stderr."""
    for line in head + error_lines(rows) + tail:
        print(line)
    if verbose:
        print()
        for line in tensor_table(rows):
            print(line)
    sys.stdout.flush()
    for line in list(notes) + warnings(rows, advice, limit):
        print(f"{prog}: {line}", file=sys.stderr)
