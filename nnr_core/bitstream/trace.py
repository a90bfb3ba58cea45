"""Syntax-element trace shared by the reader and the writer (VTM-style tracing).

One record per syntax element: (bit_pos, path, descriptor, value). Reading and writing produce the
same format, so ``diff encoder.trace decoder.trace`` stops at the first differing element.

An NDU payload (one arithmetic codeword, HLS §9) is traced as one record with its start and
byte length, then per tensor its entropy-coded elements (``trace_payload``). They carry the tensor's
start: the payload's first bit plus the arithmetic coder's bit position P (HLS §8.5; 0 at the payload's
start) before the tensor's first bin, which the encoder and the decoder count alike. Inside a tensor
the codeword has no bit boundary between elements, so they share that position.
"""
import hashlib
import json
from typing import NamedTuple, Optional

import numpy as np


class TraceRecord(NamedTuple):
    bit_pos: int
    path: str
    descriptor: str
    value: object


def format_value(value):
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def format_record(rec):
    return f"{rec.bit_pos:>10} {rec.path} {rec.descriptor} = {format_value(rec.value)}"


class Trace:
    """A list-backed trace sink. ``records`` keeps every element; ``format()`` renders them."""

    def __init__(self):
        self.records = []

    def emit(self, bit_pos, path, descriptor, value):
        self.records.append(TraceRecord(bit_pos, path, descriptor, value))

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def lines(self):
        return [format_record(r) for r in self.records]

    def format(self):
        return "".join(line + "\n" for line in self.lines())

    def write(self, fp):
        for line in self.lines():
            fp.write(line + "\n")


class PayloadTensor(NamedTuple):
    """One tensor of an NDU payload as a trace shows it."""

    name: str
    position: int                       # P before the tensor's first bin (bits from the payload's start)
    qp_offset: Optional[int]            # None for NNR_PT_INT
    hist_dep_sig_prob_enabled_flag: int
    row_skip_enabled_flag: int
    row_skip_list: Optional[np.ndarray]
    entry_points: list                  # (BitOffsetDelta, ep_arith_value, ep_dq_state) per block row after the first
    levels: np.ndarray                  # what the decoder returns (TensorResult.levels)


def trace_payload(trace, bit_pos, size, tensors, descriptor="ae(v)"):
    """Records of an NDU payload starting at bit `bit_pos`, `size` bytes long, carrying `tensors`
    (PayloadTensor, in payload order; none for NNR_PT_RAW_FLOAT, whose payload is `flt(32)` values);
    the levels as count, nonzero count and SHA-256 of their little-endian int32 bytes."""
    trace.emit(bit_pos, "nnr_compressed_data_unit_payload", descriptor, f"{size} bytes")
    for t in tensors:
        path, pos = f"nnr_compressed_data_unit_payload.{t.name}", bit_pos + t.position
        if t.qp_offset is not None:
            trace.emit(pos, f"{path}.qp_offset", "ae(v)", t.qp_offset)
        trace.emit(pos, f"{path}.hist_dep_sig_prob_enabled_flag", "ae(v)", t.hist_dep_sig_prob_enabled_flag)
        trace.emit(pos, f"{path}.row_skip_enabled_flag", "ae(v)", t.row_skip_enabled_flag)
        if t.row_skip_enabled_flag:
            trace.emit(pos, f"{path}.row_skip_list", "ae(v)", "".join(map(str, np.asarray(t.row_skip_list).tolist())))
        for j, ep in enumerate(t.entry_points):
            trace.emit(pos, f"{path}.entry_point[{j}]", "ae(v)", tuple(int(v) for v in ep))
        levels = np.ascontiguousarray(t.levels, dtype="<i4")
        digest = hashlib.sha256(levels.tobytes()).hexdigest()
        trace.emit(pos, f"{path}.levels", "ae(v)",
                   f"n={levels.size} nonzero={int(np.count_nonzero(levels))} sha256={digest}")


__all__ = ["Trace", "TraceRecord", "PayloadTensor", "format_record", "format_value", "trace_payload"]
