"""Rate-distortion sweeps: encode and decode a model over a range of QPs, with and without dependent
quantization, and measure size against weight fidelity (and, optionally, a task metric).

Not part of the standard: a tool around the codec. Every point is a normal NNC bitstream written by
`nnr.encode` and read back by `nnr.decode`, so the numbers are what a decoder really reconstructs.

Fidelity measures (per tensor t, original w, decoded w'):

* SNR_t  = 10·log10( Σ w² / Σ (w − w')² )
* PSNR_t = 10·log10( peak_t² / mean (w − w')² ) with peak_t = max |w| of the *original* tensor
  (weights are signed and have no fixed range, so the tensor's own largest magnitude is the peak).
* relative RMSE_t = RMSE / RMS of the original = sqrt( Σ (w − w')² / Σ w² ) = 10^(−SNR_t / 20): the
  error in units of the tensor's own scale (nnr_encode's summary, warnings and --quality).

Model-wide figures pool the errors: SNR = 10·log10(Σ_all w² / Σ_all (w − w')²), and
PSNR = −10·log10( mean over all parameters of ((w − w')/peak_t)² ), i.e. every parameter's error is
measured against its own tensor's peak, so tensors with large values (batch-norm variances) do not
drown the rest. A lossless tensor (or model) has infinite PSNR/SNR.
"""
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from nnr.errors import EncoderConfigError


@dataclass
class TensorPoint:
    """One tensor at one operating point."""

    name: str
    params: int
    bytes: int          # size of the tensor's NNR_NDU (header and payload)
    qp: Optional[int]   # the QP the unit signals (None for RAW_FLOAT / INT)
    psnr: float
    snr: float
    sse: float          # Σ (w − w')²
    energy: float       # Σ w²
    peak: float         # max |w|


@dataclass
class RDPoint:
    """The whole model at one operating point."""

    qp: int
    dq: bool
    bytes: int
    params: int
    psnr: float
    snr: float
    metric: Optional[float] = None
    label: str = ""
    tensors: dict = field(default_factory=dict)     # name -> TensorPoint

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.bytes / self.params if self.params else 0.0


# -- fidelity ----------------------------------------------------------------------------------


def _db(num, den):
    if den <= 0.0:
        return math.inf
    if num <= 0.0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def tensor_fidelity(w, w_dec):
    """(sse, energy, peak) of one tensor, in float64."""
    a = np.asarray(w, dtype=np.float64).reshape(-1)
    b = np.asarray(w_dec, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"decoded tensor has {b.size} elements, the original {a.size}")
    d = a - b
    return float(d @ d), float(a @ a), float(np.max(np.abs(a))) if a.size else 0.0


def relative_of(sse, energy) -> float:
    """Relative RMSE from (Σ (w − w')², Σ w²): 0 for an exact tensor, inf for an error on an all-zero one."""
    if sse == 0:
        return 0.0
    return float(math.sqrt(sse / energy)) if energy > 0 else math.inf


def relative_rmse(w, w_dec) -> float:
    """RMSE / RMS of the original tensor (see the module docstring)."""
    sse, energy, _ = tensor_fidelity(w, w_dec)
    return relative_of(sse, energy)


def psnr(w, w_dec) -> float:
    """PSNR in dB with the original tensor's peak |w| as the peak (see the module docstring)."""
    sse, _, peak = tensor_fidelity(w, w_dec)
    n = np.asarray(w).size
    return _db(n * peak * peak, sse)


def snr(w, w_dec) -> float:
    """SNR in dB: signal energy over error energy."""
    sse, energy, _ = tensor_fidelity(w, w_dec)
    return _db(energy, sse)


# -- inputs ------------------------------------------------------------------------------------


def codable_tensors(tensors) -> dict:
    """The floating-point tensors of a model, as float32 (0-d ones as shape (1,)). Integer tensors
    (e.g. batch-norm counters) are coded losslessly as NNR_PT_INT and do not move along a QP axis,
    so rate-distortion sweeps leave them out."""
    out = {}
    for name, v in tensors.items():
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
            continue
        out[name] = np.ascontiguousarray(a.reshape(-1) if a.ndim == 0 else a, dtype=np.float32)
    return out


def load_metric(spec) -> Callable:
    """A metric callable from 'package.module:function' (or a callable, returned as is). The callable
    takes the decoded tensors {name: ndarray} and returns a float (higher = better, by convention)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise EncoderConfigError(f"metric must be 'module:function', not {spec!r}")
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise EncoderConfigError(f"metric must be 'module:function', not {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise EncoderConfigError(f"metric {spec!r}: cannot import module {mod_name!r} ({err})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EncoderConfigError(f"metric {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EncoderConfigError(f"metric {spec!r} is not callable")
    return obj


# -- measuring ---------------------------------------------------------------------------------


def unit_sizes(bitstream) -> dict:
    """{topology element name: NDU bytes} of a bitstream (a unit shared by several tensors is split
    evenly between them)."""
    from nnr_core.syntax.constants import NNR_NDU
    from nnr_core.syntax.units import parse_units
    sizes = {}
    for unit in parse_units(bitstream):
        if unit.nnr_unit_type != NNR_NDU:
            continue
        f = unit.fields
        names = f.get("topology_elem_id_list") or [f.get("topology_elem_id")]
        for name in names:
            sizes[name] = unit.size // len(names)
    return sizes


def measure(tensors, bitstream, decoded=None, metric=None, qp=0, dq=False, label="", tensor_qps=None) -> RDPoint:
    """The RDPoint of one bitstream of `tensors` (decoded here unless `decoded` is given);
    tensor_qps: {name: QP} to record per tensor."""
    import nnr
    if decoded is None:
        decoded = nnr.decode(bitstream)
    sizes = unit_sizes(bitstream)
    per = {}
    sse_all = energy_all = nse_all = 0.0
    params = 0
    for name, w in tensors.items():
        if name not in decoded:
            raise ValueError(f"tensor {name!r} is missing from the decoded model")
        sse, energy, peak = tensor_fidelity(w, decoded[name])
        n = int(np.asarray(w).size)
        size = sizes.get(name, 0)
        tqp = (tensor_qps or {}).get(name)
        per[name] = TensorPoint(name, n, size, tqp, _db(n * peak * peak, sse), _db(energy, sse), sse, energy, peak)
        sse_all += sse
        energy_all += energy
        nse_all += sse / (peak * peak) if peak > 0 else 0.0
        params += n
    value = None
    if metric is not None:
        value = float(metric({k: np.asarray(v) for k, v in decoded.items()}))
    return RDPoint(qp, dq, len(bitstream), params, _db(params, nse_all), _db(energy_all, sse_all), value,
                   label, per)


def sweep(tensors, qps, dqs=(True, False), metric=None, progress=None, **options) -> list:
    """Encode + decode `tensors` at every (qp, dq); returns RDPoints in that order.
    options go to nnr.encode (qp and dq are set per point); metric: a callable or 'module:function'."""
    import nnr
    tensors = codable_tensors(tensors)
    if not tensors:
        raise EncoderConfigError("the model has no floating-point tensors to sweep")
    fn = load_metric(metric) if metric is not None else None
    points = []
    for dq in dqs:
        for qp in qps:
            data = nnr.encode(tensors, qp=int(qp), dq=bool(dq), **options)
            p = measure(tensors, data, metric=fn, qp=int(qp), dq=bool(dq), label=f"qp {qp} {'DQ' if dq else 'URQ'}",
                        tensor_qps=planned_qps(tensors, qp=int(qp), **options))
            points.append(p)
            if progress is not None:
                progress(p)
    return points


def parse_qp_range(text) -> list:
    """'-20:-44:4' -> [-20, -24, ..., -44] (start:stop:step, stop included; the step's sign follows
    the direction); '-32' -> [-32]; '-20,-30,-38' -> that list."""
    text = str(text).strip()
    try:
        if "," in text:
            return [int(x) for x in text.split(",") if x.strip()]
        parts = [int(x) for x in text.split(":")]
    except ValueError:
        raise EncoderConfigError(f"QP range must be 'start:stop[:step]' or a comma list, not {text!r}") from None
    if len(parts) == 1:
        return parts
    if len(parts) not in (2, 3):
        raise EncoderConfigError(f"QP range must be 'start:stop[:step]', not {text!r}")
    start, stop = parts[0], parts[1]
    step = abs(parts[2]) if len(parts) == 3 else 1
    if step == 0:
        raise EncoderConfigError("QP range step must not be 0")
    step = step if stop >= start else -step
    return list(range(start, stop + (1 if step > 0 else -1), step))


def planned_qps(tensors, qp=-32, qp_density=2, nonweight_qp=-75, qp_per_tensor=None, **_):
    """The QP the encoder's rule gives each tensor (weights: ndim > 1; before any overflow guard)."""
    other = nonweight_qp if nonweight_qp else qp - (2 << qp_density)
    out = {n: (qp if np.asarray(w).ndim > 1 else other) for n, w in tensors.items()}
    out.update({n: int(v) for n, v in (qp_per_tensor or {}).items() if n in out})
    return out


# -- reporting ---------------------------------------------------------------------------------


def _fmt_db(x):
    return "inf" if math.isinf(x) and x > 0 else f"{x:.2f}"


def table_rows(points, metric_name=None):
    head = ["label", "qp", "DQ", "bytes", "bits/param", "PSNR dB", "SNR dB"]
    if metric_name:
        head.append(metric_name)
    rows = []
    for p in points:
        r = [p.label or f"qp {p.qp}", str(p.qp), "on" if p.dq else "off", str(p.bytes),
             f"{p.bits_per_param:.4f}", _fmt_db(p.psnr), _fmt_db(p.snr)]
        if metric_name:
            r.append("" if p.metric is None else f"{p.metric:.4f}")
        rows.append(r)
    return head, rows


def table_markdown(points, metric_name=None) -> str:
    """A Markdown table of the points."""
    head, rows = table_rows(points, metric_name)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_text(points, metric_name=None) -> str:
    """A fixed-width text table of the points."""
    head, rows = table_rows(points, metric_name)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in rows]) + "\n"


def table_csv(points, metric_name=None, per_tensor=False) -> str:
    """CSV of the points; per_tensor=True adds one row per tensor and point."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf)
    if not per_tensor:
        head, rows = table_rows(points, metric_name)
        w.writerow(head)
        w.writerows(rows)
        return buf.getvalue()
    w.writerow(["label", "qp", "dq", "tensor", "params", "bytes", "bits/param", "tensor_qp", "psnr", "snr"])
    for p in points:
        for t in p.tensors.values():
            w.writerow([p.label, p.qp, int(p.dq), t.name, t.params, t.bytes,
                        f"{8.0 * t.bytes / t.params:.4f}" if t.params else "", t.qp, _fmt_db(t.psnr), _fmt_db(t.snr)])
    return buf.getvalue()
