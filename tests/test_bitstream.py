"""BitReader / BitWriter against hand-made bytes (HLS §1.2) and their error behaviour."""
import struct

import pytest
from hypothesis import given, settings, strategies as hs

from nnr.errors import NNRError, SyntaxValueError, TruncatedBitstreamError
from nnr_core.bitstream.reader import BitReader
from nnr_core.bitstream.trace import Trace, format_record
from nnr_core.bitstream.writer import BitWriter


def bits_to_bytes(bits):
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


# -- HLS §1.2 examples ---------------------------------------------------------------------
@pytest.mark.parametrize("k,value,bits", [
    (1, 0, "10"), (1, 2, "0100"), (7, 4, "1 0000100"), (5, 0, "1 00000"),
    (0, 0, "1"), (0, 1, "010"), (0, 2, "011"), (0, 3, "00100"), (11, 531, "1 01000010011"),
    (2, 12, "0010000"), (1, 1, "11"), (5, 1, "100001"), (4, 1, "10001"),
])
def test_ue_examples(k, value, bits):
    r = BitReader(bits_to_bytes(bits))
    assert r.ue(k) == value
    assert r.pos == len(bits.replace(" ", ""))
    w = BitWriter()
    w.ue(value, k)
    assert w.pos == len(bits.replace(" ", ""))
    assert w.getvalue() == bits_to_bytes(bits)


@pytest.mark.parametrize("k,value,bits", [
    (0, 0, "1"), (0, 1, "010"), (0, -1, "011"), (0, 2, "00100"), (0, -2, "00101"),
    (2, -3, "01010"), (7, -68, "0100001000"), (7, -1, "10000010"),
])
def test_ie_examples(k, value, bits):
    assert BitReader(bits_to_bytes(bits)).ie(k) == value
    w = BitWriter()
    w.ie(value, k)
    assert w.getvalue() == bits_to_bytes(bits)


def test_u_i_msb_first():
    r = BitReader(bytes([0b10110000, 0xFF, 0x00]))
    assert r.u(1) == 1 and r.u(2) == 1 and r.u(5) == 16
    assert r.i(4) == -1 and r.i(4) == -1
    assert r.i(8) == 0
    r = BitReader(bytes([0b01011111, 0b11111011]))   # u(3)=2, i(13) = -5 (HLS §16.8)
    assert r.u(3) == 2 and r.i(13) == -5
    w = BitWriter()
    w.u(2, 3)
    w.i(-5, 13)
    assert w.getvalue() == bytes([0x5F, 0xFB])


def test_u64_and_long_bits():
    data = bytes(range(1, 65))
    r = BitReader(data)
    assert r.u(64) == int.from_bytes(data[:8], "big")
    r = BitReader(data)
    r.u(3)
    assert r.bits(256) == (int.from_bytes(data[:33], "big") >> 5) & ((1 << 256) - 1)
    w = BitWriter()
    w.bits(int.from_bytes(data, "big"), 512)
    assert w.getvalue() == data


def test_flt_little_endian_unaligned():
    raw = struct.pack("<f", 0.1)
    assert raw == bytes.fromhex("cdcccc3d")
    assert BitReader(raw).flt() == struct.unpack("<f", raw)[0]
    # unaligned: 3 bits then the float
    w = BitWriter()
    w.u(5, 3)
    w.flt(0.5)
    w.byte_alignment()
    r = BitReader(w.getvalue())
    assert r.u(3) == 5 and r.flt() == 0.5
    w = BitWriter()
    w.flt(0.7)   # a double is rounded to the nearest float32
    assert w.getvalue() == bytes.fromhex("3333333f")


def test_flt_rejects_unrepresentable():
    with pytest.raises(SyntaxValueError):
        BitWriter().flt(1e300, name="x")


def test_st():
    r = BitReader(b"fc.weight\x00\xff")
    assert r.st() == "fc.weight" and r.pos == 80
    w = BitWriter()
    w.st("fc.weight")
    assert w.getvalue() == b"fc.weight\x00"
    assert BitReader("ä".encode() + b"\x00").st() == "ä"


def test_st_errors():
    with pytest.raises(SyntaxValueError):
        BitReader(b"\xff\xfe\x00").st(name="topology_elem_id")
    with pytest.raises(TruncatedBitstreamError) as ei:
        BitReader(b"abc").st(name="topology_elem_id")
    assert ei.value.element == "topology_elem_id" and ei.value.bit_offset == 0
    r = BitReader(b"\x80a\x00")
    r.u(1)
    with pytest.raises(SyntaxValueError):
        r.st()
    w = BitWriter()
    w.u(1, 1)
    with pytest.raises(SyntaxValueError):
        w.st("a")
    with pytest.raises(SyntaxValueError):
        BitWriter().st("a\x00b")
    with pytest.raises(SyntaxValueError):
        BitWriter().st("\ud800")


def test_byte_alignment():
    r = BitReader(b"\x80\x40")
    assert r.byte_alignment() == (8, 128)   # aligned: a whole byte
    r.u(1)
    assert r.byte_alignment(strict=True) == (7, 64)
    r = BitReader(b"\x81")
    r.u(2)
    assert r.byte_alignment() == (6, 1)      # lenient: bits not checked
    r = BitReader(b"\x81")
    r.u(2)
    with pytest.raises(SyntaxValueError):
        r.byte_alignment(strict=True)
    w = BitWriter()
    w.byte_alignment()
    w.u(0, 1)
    w.byte_alignment()
    assert w.getvalue() == b"\x80\x40"


def test_positions_and_window():
    r = BitReader(b"\x00\x04\x02\x01", start_byte=2, end_byte=3)
    assert r.pos == 16 and r.byte_aligned
    assert r.u(6) == 0 and r.pos == 22
    assert not r.byte_aligned
    r.u(2)
    with pytest.raises(TruncatedBitstreamError) as ei:
        r.u(8, name="general_profile_idc")
    assert ei.value.bit_offset == 24 and ei.value.element == "general_profile_idc"
    assert "bit 24" in str(ei.value)


@pytest.mark.parametrize("op", [
    lambda r: r.u(9), lambda r: r.i(9), lambda r: r.ue(7), lambda r: r.ie(7), lambda r: r.flt(),
    lambda r: r.bits(256),
])
def test_truncation(op):
    r = BitReader(b"\x00")
    with pytest.raises(TruncatedBitstreamError):
        op(r)
    with pytest.raises(TruncatedBitstreamError):
        op(BitReader(b""))


def test_byte_alignment_truncation():
    r = BitReader(b"\x00")
    r.u(8)
    with pytest.raises(TruncatedBitstreamError):
        r.byte_alignment()


def test_ue_absurd_prefix():
    with pytest.raises(SyntaxValueError):
        BitReader(bytes(100)).ue(0, name="x")
    with pytest.raises(TruncatedBitstreamError):   # suffix runs past the end
        BitReader(b"\x01").ue(7)


@pytest.mark.parametrize("call", [
    lambda w: w.u(2, 1, name="f"), lambda w: w.u(-1, 3, name="f"), lambda w: w.i(8, 4, name="f"),
    lambda w: w.i(-9, 4, name="f"), lambda w: w.ue(-1, 2, name="f"), lambda w: w.u(1.5, 3, name="f"),
    lambda w: w.ue(1 << 80, 0, name="f"), lambda w: w.flt("x", name="f"), lambda w: w.st(3, name="f"),
])
def test_writer_range_errors(call):
    with pytest.raises(SyntaxValueError) as ei:
        call(BitWriter())
    assert ei.value.element == "f"


def test_trace_format():
    t = Trace()
    t.emit(0, "a.b", "u(1)", 1)
    t.emit(176, "x.topology_elem_id", "st(v)", "fc.weight")
    assert t.lines() == ["         0 a.b u(1) = 1",
                         '       176 x.topology_elem_id st(v) = "fc.weight"']
    assert format_record(t.records[0]) == t.lines()[0]


# -- properties ----------------------------------------------------------------------------
_ops = hs.one_of(
    hs.integers(1, 64).flatmap(lambda n: hs.tuples(hs.just("u"), hs.integers(0, (1 << n) - 1), hs.just(n))),
    hs.integers(1, 64).flatmap(lambda n: hs.tuples(hs.just("i"), hs.integers(-(1 << (n - 1)), (1 << (n - 1)) - 1), hs.just(n))),
    hs.tuples(hs.just("ue"), hs.integers(0, 1 << 40), hs.integers(0, 15)),
    hs.tuples(hs.just("ie"), hs.integers(-(1 << 40), 1 << 40), hs.integers(0, 15)),
    hs.tuples(hs.just("flt"), hs.floats(width=32, allow_nan=False), hs.just(0)),
    hs.tuples(hs.just("align"), hs.just(0), hs.just(0)),
    hs.tuples(hs.just("st"), hs.text(alphabet=hs.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8), hs.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(hs.lists(_ops, max_size=30))
def test_write_read_roundtrip(ops):
    w = BitWriter()
    for kind, v, n in ops:
        if kind == "st":
            w.byte_alignment()
            w.st(v)
        elif kind == "align":
            w.byte_alignment()
        elif kind == "flt":
            w.flt(v)
        else:
            getattr(w, kind)(v, n)
    data = w.getvalue()
    r = BitReader(data)
    for kind, v, n in ops:
        if kind == "st":
            r.byte_alignment(strict=True)
            assert r.st() == v
        elif kind == "align":
            r.byte_alignment(strict=True)
        elif kind == "flt":
            assert r.flt() == v
        else:
            assert getattr(r, kind)(n) == v
    assert r.pos == w.pos


@settings(max_examples=200, deadline=None)
@given(hs.binary(max_size=16), hs.lists(hs.sampled_from(["u", "i", "ue", "ie", "flt", "st", "align", "bits"]), max_size=20))
def test_random_bytes_raise_only_nnr_errors(data, ops):
    r = BitReader(data)
    try:
        for op in ops:
            if op in ("u", "i"):
                getattr(r, op)(13)
            elif op in ("ue", "ie"):
                getattr(r, op)(3)
            elif op == "align":
                r.byte_alignment(strict=True)
            elif op == "bits":
                r.bits(70)
            else:
                getattr(r, op)()
    except NNRError:
        pass
