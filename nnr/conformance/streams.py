"""Building blocks for the streams the generator writes: test tensors, unit-level rebuilding of
encoder output (``rebuild``) and hand-built units (``write_unit`` from the syntax tables)."""
import numpy as np

from nnr_core.syntax.units import SyntaxState, parse_units, write_unit

# fields parse_unit derives (recomputed by write_unit): never copied into an edited unit
DERIVED = {"nnr_unit_size", "Rows", "RowWidth", "NumElements", "NumEntryPoints", "BitOffsetDelta",
           "CbZeroOffset", "Codebook"}


def gauss(seed, shape, scale=0.05):
    return (np.random.RandomState(seed).randn(*shape) * scale).astype(np.float32)


def sparse_rows(seed, shape, frac=0.5, scale=0.05):
    a = gauss(seed, shape, scale)
    rows = np.random.RandomState(seed + 1000).rand(shape[0]) < frac
    a[rows] = 0
    return a


def units_of(data):
    """[(unit_type, fields, payload bytes)] of a bitstream."""
    out = []
    for u in parse_units(data):
        f = {k: v for k, v in u.fields.items() if k not in DERIVED}
        out.append([u.nnr_unit_type, f, data[u.payload_offset:u.payload_end]])
    return out


def assemble(units, state=None):
    """Write [(unit_type, fields, payload)] back into a bitstream (sizes recomputed)."""
    state = state or SyntaxState()
    out = bytearray()
    for kind, fields, payload in units:
        out += write_unit(kind, fields, state, payload)
    return bytes(out)


def rebuild(data, edit):
    """Parse ``data``, let ``edit(units)`` change the list [(type, fields, payload)] in place (or
    return a new one), write it back."""
    units = units_of(data)
    new = edit(units)
    return assemble(units if new is None else new)


def find(units, kind, n=0):
    """The n-th unit of ``kind`` in a units list."""
    return [u for u in units if u[0] == kind][n]


def raw_unit(unit_type, body: bytes, long_form=False):
    """A unit from raw header+payload bytes (for unit types the syntax tables refuse to write)."""
    size = len(body) + 1 + (4 if long_form else 2)
    head = ((1 << 31) | size).to_bytes(4, "big") if long_form else size.to_bytes(2, "big")
    return head + bytes([(unit_type << 2) | 0b10]) + body


def set_size(data, unit_index, delta):
    """Add ``delta`` to one unit's nnr_unit_size field (short form), nothing else."""
    off = 0
    for _ in range(unit_index):
        off += int.from_bytes(data[off:off + 2], "big") & 0x7FFF
    size = (int.from_bytes(data[off:off + 2], "big") & 0x7FFF) + delta
    return data[:off] + size.to_bytes(2, "big") + data[off + 2:]


def unit_offsets(data):
    from nnr_core.syntax.units import split_units
    return [(s.offset, s.size) for s in split_units(data)]
