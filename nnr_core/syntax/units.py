"""NNR unit framing and the public parse/write API (HLS §2, HLS §12.1, HLS §14.8).

``split_units`` walks nnr_unit_size() only; ``parse_unit`` reads one unit's size, header and
payload structure (for an NDU: the header up to its byte_alignment(); the payload bytes are handed
to the caller); ``write_unit`` serialises a unit from the same syntax tables. All three are driven
by ``spec/syntax`` through ``walker.Walker``.
"""
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from nnr_core.errors import (ConstraintViolationError, NNRError, SyntaxValueError, TruncatedBitstreamError,
                        UnitSizeMismatchError, UnsupportedFeatureError)

from ..bitstream.reader import BitReader
from ..bitstream.writer import BitWriter
from .constants import NNR_LPS, NNR_MPS, NNR_NDU, NNR_STR, UNIT_TYPE_NAMES
from .walker import Walker

SHORT_SIZE_MAX = (1 << 15) - 1


class UnitSpan(NamedTuple):
    index: int
    offset: int
    size: int
    size_field_bytes: int


@dataclass
class ParsedUnit:
    index: int
    offset: int
    size: int
    nnr_unit_type: int
    fields: dict
    payload_offset: int
    payload_end: int
    # what the syntax of the unit depended on (general_profile_idc, MPS fields, dc_pending_h,
    # strict), to parse it again when an error needs element positions
    context: Optional[tuple] = field(default=None, repr=False)
    max_topology_bytes: Optional[int] = None    # NNR_TPL: the parsing Decoder's limit (0: none)
    _positions: Optional[dict] = field(default=None, repr=False)

    @property
    def type_name(self):
        return UNIT_TYPE_NAMES.get(self.nnr_unit_type, f"reserved({self.nnr_unit_type})")

    @property
    def size_field_bytes(self):
        return 4 if self.fields.get("nnr_unit_size_flag") else 2

    def bit_of(self, element, data=None):
        """Absolute bit offset of a syntax element of this unit: by name (its first occurrence),
        trace path or path suffix (``ep_arith_value[2]``); the unit's start if it was not read.
        Positions are not kept while parsing (they would double the memory of many small units):
        the unit is parsed again from `data`, the bitstream it came from, with a trace."""
        if element == "nnr_unit_type":
            return 8 * (self.offset + self.size_field_bytes)
        if self._positions is None and data is not None:
            self._positions = _element_positions(data, self)
        positions = self._positions or {}
        bit = positions.get(element)
        if bit is None and element:
            tail = "." + element
            bit = next((b for path, b in positions.items() if path.endswith(tail)), None)
        return 8 * self.offset if bit is None else bit


class SyntaxState:
    """Cross-unit state the syntax depends on (HLS §12.3).

    ``resolve_out_of_band(fields)`` is called at the NDU header's resolution point (HLS §11); it may
    fill in count_tensor_dimensions / tensor_dimensions / decomposition_rank / g_number_of_rows.
    Pass ``resolve_out_of_band=callable`` or subclass and override. ``dc_pending_h`` (set by the
    decoder after a separately coded G unit) selects H's entry-point count (HLS §8.5). ``strict``
    checks reserved bits and byte_alignment() bits when reading.
    """

    def __init__(self, general_profile_idc=None, mps=None, lps=None,
                 resolve_out_of_band: Optional[Callable[[dict], None]] = None, strict=False):
        self.general_profile_idc = general_profile_idc
        self.mps = mps
        self.lps = lps
        self.dc_pending_h = False
        self.strict = strict
        self._oob = resolve_out_of_band

    def resolve_out_of_band(self, fields):
        if self._oob is not None:
            self._oob(fields)
        missing = []
        if "count_tensor_dimensions" not in fields or "tensor_dimensions" not in fields:
            missing.append("count_tensor_dimensions/tensor_dimensions")
        if fields.get("compressed_parameter_types", 0) & 1 and (
                "decomposition_rank" not in fields or "g_number_of_rows" not in fields):
            missing.append("decomposition_rank/g_number_of_rows")
        if missing:
            raise UnsupportedFeatureError(
                f"NDU header needs {', '.join(missing)} from out-of-band information, and none "
                f"was supplied (HLS §11)")

    def _env(self, unit_type, unit_index):
        env = {"dc_pending_h": self.dc_pending_h}
        if unit_type in (NNR_MPS, NNR_NDU):
            if self.general_profile_idc is None:
                raise ConstraintViolationError(
                    f"{UNIT_TYPE_NAMES[unit_type]} before the NNR_STR unit (no general_profile_idc)",
                    unit_index=unit_index)
        if unit_type == NNR_NDU and self.mps is None:
            raise ConstraintViolationError("NNR_NDU before the NNR_MPS unit", unit_index=unit_index)
        if self.mps:
            env.update(self.mps)
        if self.general_profile_idc is not None:
            env["general_profile_idc"] = self.general_profile_idc
        return env

    def _update(self, unit_type, fields):
        if unit_type == NNR_STR:
            self.general_profile_idc = fields["general_profile_idc"]
        elif unit_type == NNR_MPS:
            self.mps = fields
        elif unit_type == NNR_LPS:
            self.lps = fields


def _peek_type(data, offset, size_field_bytes, end):
    p = offset + size_field_bytes
    return data[p] >> 2 if p < end else None


def unit_type_of(data, span: UnitSpan) -> int:
    """nnr_unit_type of a unit found by split_units, without parsing it: the first six bits after
    nnr_unit_size() (HLS §2.2)."""
    return _peek_type(data, span.offset, span.size_field_bytes, span.offset + span.size)


def split_units(data) -> list:
    """Walk nnr_unit_size() of every unit; no unit content is interpreted."""
    spans = []
    n = len(data)
    offset = 0
    while offset < n:
        index = len(spans)
        reader = BitReader(data, offset, n)
        try:
            f = Walker("read", reader, unit_index=index).run("nnr_unit_size")
        except TruncatedBitstreamError as exc:
            raise TruncatedBitstreamError(f"bitstream ends inside nnr_unit_size() of unit {index}",
                                          unit_index=index, element=exc.element,
                                          bit_offset=offset * 8) from None
        sfb = reader.pos // 8 - offset
        size = f["nnr_unit_size"]
        if size < sfb + 1:
            raise UnitSizeMismatchError(
                f"nnr_unit_size {size} is smaller than its own {sfb}-byte size field plus the "
                f"1-byte unit header", unit_index=index, element="nnr_unit_size.nnr_unit_size",
                bit_offset=offset * 8, value=size, allowed=f"{sfb + 1}..")
        if offset + size > n:
            raise TruncatedBitstreamError(
                f"unit {index} runs past the end of the bitstream: nnr_unit_size {size}, "
                f"{n - offset} bytes left", unit_index=index, element="nnr_unit_size.nnr_unit_size",
                bit_offset=offset * 8, value=size)
        spans.append(UnitSpan(index, offset, size, sfb))
        offset += size
    return spans


def parse_unit(data, span: UnitSpan, state: SyntaxState, trace=None) -> ParsedUnit:
    """Parse one unit (size, common header, unit header, payload structure or NDU header)."""
    end = span.offset + span.size
    if end > len(data):
        raise TruncatedBitstreamError("unit runs past the end of the data", unit_index=span.index,
                                      bit_offset=span.offset * 8)
    unit_type = _peek_type(data, span.offset, span.size_field_bytes, end)
    try:
        env = state._env(unit_type, span.index)
    except ConstraintViolationError as exc:
        raise exc.located(element="nnr_unit_type", bit_offset=8 * (span.offset + span.size_field_bytes)) from None
    reader = BitReader(data, span.offset, end)
    hooks = {"resolve_out_of_band": state.resolve_out_of_band}
    walker = Walker("read", reader, state=env, hooks=hooks, trace=trace, strict=state.strict,
                    unit_index=span.index)
    try:
        fields = walker.run("nnr_unit", path="")
    except TruncatedBitstreamError as exc:
        # The data holds the whole unit (split_units checked it): the content runs past
        # nnr_unit_size, i.e. the size field disagrees with the content.
        raise UnitSizeMismatchError(
            f"unit content runs past nnr_unit_size ({span.size} bytes): {exc.reason}",
            unit_index=span.index, element=exc.element, bit_offset=exc.bit_offset) from None
    if fields["nnr_unit_size"] != span.size:
        raise UnitSizeMismatchError("nnr_unit_size differs from the unit span",
                                    unit_index=span.index, element="nnr_unit_size",
                                    bit_offset=span.offset * 8, value=fields["nnr_unit_size"],
                                    allowed=span.size)
    utype = fields["nnr_unit_type"]
    pos_byte = reader.pos // 8
    if utype == NNR_NDU:
        payload_offset, payload_end = pos_byte, end
    else:
        if reader.pos != end * 8:
            raise UnitSizeMismatchError(
                f"{UNIT_TYPE_NAMES[utype]} content ends at byte {pos_byte - span.offset} of a "
                f"{span.size}-byte unit (units must be consumed exactly, HLS §2.2)",
                unit_index=span.index, element=UNIT_TYPE_NAMES[utype], bit_offset=reader.pos,
                value=span.size, allowed=pos_byte - span.offset)
        payload_offset = payload_end = end
    context = (state.general_profile_idc, state.mps, state.dc_pending_h, state.strict)
    state._update(utype, fields)
    return ParsedUnit(span.index, span.offset, span.size, utype, fields, payload_offset,
                      payload_end, context)


_OUT_OF_BAND = ("count_tensor_dimensions", "tensor_dimensions", "decomposition_rank", "g_number_of_rows")


def _element_positions(data, unit) -> dict:
    """{trace path and element name (first occurrence): bit offset} of a parsed unit, from parsing
    it again with a trace in the syntax context it was parsed in; {} if that is not possible."""
    if unit.context is None:
        return {}
    from ..bitstream.trace import Trace
    gpi, mps, dc_pending_h, strict = unit.context

    def out_of_band(fields):        # what the out-of-band hook supplied the first time
        fields.update({k: unit.fields[k] for k in _OUT_OF_BAND if k in unit.fields and k not in fields})

    state = SyntaxState(gpi, mps, resolve_out_of_band=out_of_band, strict=strict)
    state.dc_pending_h = dc_pending_h
    trace = Trace()
    try:
        parse_unit(data, UnitSpan(unit.index, unit.offset, unit.size, unit.size_field_bytes), state, trace)
    except NNRError:        # it parsed before; if not now, what was traced is all there is
        pass
    positions = {}
    for rec in trace:
        positions.setdefault(rec.path, rec.bit_pos)
        name = rec.path.rsplit(".", 1)[-1].split("[", 1)[0]
        positions.setdefault(name, rec.bit_pos)
    return positions


def parse_units(data, state: Optional[SyntaxState] = None, trace=None) -> list:
    """Convenience: split and parse every unit of a bitstream in order."""
    state = state if state is not None else SyntaxState()
    return [parse_unit(data, span, state, trace) for span in split_units(data)]


def write_unit(nnr_unit_type: int, fields: dict, state: SyntaxState, payload: bytes = b"",
               trace=None, *, stream_offset: int = 0) -> bytes:
    """Serialise a whole unit: nnr_unit_size (short form iff the total is <= 32767 bytes, unless
    ``fields['nnr_unit_size_flag'] == 1`` asks for the long form), header, payload structure or
    NDU header followed by ``payload``. ``stream_offset`` (bytes) only shifts trace positions."""
    payload = bytes(payload)
    if payload and nnr_unit_type != NNR_NDU:
        raise SyntaxValueError("only an NNR_NDU carries payload bytes", element="payload",
                               value=len(payload))
    env = state._env(nnr_unit_type, None)
    hooks = {"resolve_out_of_band": state.resolve_out_of_band}
    f = dict(fields)
    f["nnr_unit_type"] = nnr_unit_type
    f.setdefault("independently_decodable_flag", 1)
    f.setdefault("partial_data_counter_present_flag", 0)
    # Pass 1: measure the header + payload structure with a 2-byte size placeholder.
    f["nnr_unit_size_flag"], f["nnr_unit_size"] = 0, 0
    w = BitWriter()
    Walker("write", w, state=env, hooks=hooks, strict=state.strict).run("nnr_unit", f, path="")
    body = len(w.getvalue()) - 2 + len(payload)
    long_form = fields.get("nnr_unit_size_flag") == 1 or body + 2 > SHORT_SIZE_MAX
    f["nnr_unit_size_flag"] = 1 if long_form else 0
    f["nnr_unit_size"] = body + (4 if long_form else 2)
    if f["nnr_unit_size"] >= 1 << 31:
        raise SyntaxValueError("unit too large for nnr_unit_size", element="nnr_unit_size",
                               value=f["nnr_unit_size"], allowed=f"..{(1 << 31) - 1}")
    # Pass 2: the real unit, traced.
    w = BitWriter()
    done = Walker("write", w, state=env, hooks=hooks, trace=trace, strict=state.strict,
                  trace_base=stream_offset * 8).run("nnr_unit", f, path="")
    w.write_bytes(payload)
    out = w.getvalue()
    assert len(out) == f["nnr_unit_size"]  # internal invariant, not input validation
    state._update(nnr_unit_type, done)
    return out


__all__ = ["split_units", "parse_unit", "parse_units", "write_unit", "unit_type_of", "SyntaxState",
           "ParsedUnit", "UnitSpan", "UNIT_TYPE_NAMES"]
