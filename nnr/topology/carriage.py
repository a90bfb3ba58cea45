"""Topology carriage in the NNR_TPL unit (HLS §6): a serialized graph or module skeleton as
the unit's topology_data, optionally deflate-compressed (topology_compression_format 1, NNR_DFL).

Binary topology (every storage format other than NNCodec's uncompressed 0/3/4) is the byte string
`topology_data_byte[]` running to the end of the unit, after NNCodec's NUL-terminated string
`topology_data`, which nnr leaves empty (one 0x00 byte; spec/syntax/20_topology_quantization.syntax,
spec/README.md)."""
import zlib

from nnr.errors import ConstraintViolationError, ResourceLimitError, SyntaxValueError
from nnr_core.syntax.constants import NNR_DFL, NNR_RAW, NNR_TPL

MAX_TOPOLOGY_BYTES = 1 << 28        # default limit (nnr.Decoder(max_topology_bytes=...)): 256 MiB
_INFLATE_CHUNK = 1 << 20            # output produced per step, checked against the limit


def deflate(data: bytes) -> bytes:
    """Deflate (RFC 1951) at level 9 in the zlib wrapper (RFC 1950), whose Adler-32 check lets a
    decoder tell a corrupted topology from a valid one."""
    return zlib.compress(data, 9)


def inflate(data: bytes, unit_index=None, max_bytes=MAX_TOPOLOGY_BYTES, bit_offset=None) -> bytes:
    """Inverse of `deflate`; also accepts gzip and raw (unwrapped) deflate. Corrupt data raises
    SyntaxValueError; output beyond `max_bytes` (None: no limit) raises ResourceLimitError as soon as
    it is produced: the data is inflated a megabyte at a time, so a deflate bomb costs at most the
    limit in memory and time. `unit_index` / `bit_offset` locate the compressed data in errors."""
    element = "nnr_topology_unit_payload.topology_data_byte"
    last = None
    for wbits in (47, -15):             # zlib / gzip (header auto-detected, checksummed), then raw
        d = zlib.decompressobj(wbits)
        out = bytearray()
        rest = data
        try:
            while not d.eof:
                chunk = d.decompress(rest, _INFLATE_CHUNK)
                rest = d.unconsumed_tail
                if not chunk and not rest:
                    break                   # input used up, nothing pending: the stream is cut
                out += chunk
                if max_bytes is not None and len(out) > max_bytes:
                    raise ResourceLimitError("topology_data inflates to more than max_topology_bytes "
                                             "(Decoder(max_topology_bytes=...) raises the limit)",
                                             unit_index=unit_index, element=element, bit_offset=bit_offset,
                                             allowed=f"..{max_bytes} bytes")
        except zlib.error as exc:
            last = exc
            continue
        if not d.eof:
            last = zlib.error("incomplete deflate stream")
            continue
        return bytes(out)
    raise SyntaxValueError(f"topology_data is not a valid deflate stream: {last}", unit_index=unit_index,
                           element=element, bit_offset=bit_offset)


def tpl_fields(storage_format: int, data: bytes, compress=True) -> dict:
    """The fields of an NNR_TPL unit carrying `data` in `storage_format` as binary topology (deflated
    when `compress`), for Encoder.encode(topology=...)."""
    payload = deflate(data) if compress else bytes(data)
    return {"topology_storage_format": storage_format, "topology_compression_format": NNR_DFL if compress else NNR_RAW,
            "topology_data": "", "topology_data_byte": list(payload)}


def replace_tpl(bitstream: bytes, storage_format: int, data: bytes, compress=True) -> bytes:
    """The bitstream with its (first) NNR_TPL unit replaced by one carrying `data` in `storage_format`
    (deflated when `compress`). The encoder writes the TPL unit between MPS and the NDUs; nothing
    else in the stream depends on its contents or size."""
    from nnr_core.syntax.units import SyntaxState, split_units, unit_type_of, write_unit
    spans = split_units(bitstream)
    tpl = next((s for s in spans if unit_type_of(bitstream, s) == NNR_TPL), None)
    if tpl is None:
        raise ConstraintViolationError("the encoder wrote no NNR_TPL unit to replace", element="nnr_unit_type")
    unit = write_unit(NNR_TPL, tpl_fields(storage_format, data, compress), SyntaxState())
    return bitstream[:tpl.offset] + unit + bitstream[tpl.offset + tpl.size:]


def read_tpl(units, max_bytes=None):
    """(storage_format, topology bytes, unit index) of the first NNR_TPL unit among parsed `units`
    (Decoder.units), inflated; (None, b"", None) without one. A string topology_data (NNCodec's
    formats 0/3/4) is returned UTF-8 encoded. Inflation stops at `max_bytes`; None: the limit of the
    Decoder that parsed the units (its max_topology_bytes), else MAX_TOPOLOGY_BYTES."""
    unit = next((u for u in units if u.nnr_unit_type == NNR_TPL), None)
    if unit is None:
        return None, b"", None
    f = unit.fields
    text = f.get("topology_data", "").encode("utf-8", "surrogateescape")
    data = bytes(f.get("topology_data_byte", ()))
    tail = len(data)                     # the topology bytes run to the end of the unit
    if text:                             # not nnr's layout: the whole payload as one byte string
        tail += len(text) + 1
        data = text + b"\0" + data if data else text
    if f.get("topology_compression_format") == NNR_DFL:
        if max_bytes is None:
            recorded = getattr(unit, "max_topology_bytes", None)     # 0: the Decoder had no limit
            max_bytes = MAX_TOPOLOGY_BYTES if recorded is None else (recorded or None)
        data = inflate(data, unit.index, max_bytes, bit_offset=8 * (unit.offset + unit.size - tail))
    return f.get("topology_storage_format"), data, unit.index
