"""Syntax-element trace shared by the reader and the writer (VTM-style tracing).

One record per syntax element: (bit_pos, path, descriptor, value). Reading and writing produce the
same format, so ``diff encoder.trace decoder.trace`` stops at the first differing element.
"""
import json
from typing import NamedTuple


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


__all__ = ["Trace", "TraceRecord", "format_record", "format_value"]
