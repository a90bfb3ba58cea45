"""Bit reader for the NNR descriptors of ISO/IEC 15938-17 (HLS §1.2).

u(n), i(n), ue(k), ie(k), flt(32) (little-endian, REF-QUIRK), st(v) and byte_alignment().
Bits are consumed MSB first. Every read is bounds-checked against ``end_byte`` and raises
``TruncatedBitstreamError`` naming the element and its bit offset; nothing ever reads past the end
or loops on garbage.
"""
import struct

from nnr_core.errors import SyntaxValueError, TruncatedBitstreamError

#: ue(k) prefixes longer than this are rejected: no legal NNR value needs more than 63 leading zeros.
MAX_UE_PREFIX = 63


class BitReader:
    """MSB-first reader over ``data[start_byte:end_byte]``; ``pos`` is the absolute bit position."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data, start_byte=0, end_byte=None):
        self._data = bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data
        n = len(self._data)
        if end_byte is None:
            end_byte = n
        if not 0 <= start_byte <= end_byte <= n:
            raise ValueError(f"bad reader window {start_byte}..{end_byte} for {n} bytes")
        self._pos = start_byte * 8
        self._end = end_byte * 8

    # -- position ---------------------------------------------------------------------------
    @property
    def pos(self):
        """Absolute bit position of the next bit to read."""
        return self._pos

    @property
    def end(self):
        """Absolute bit position one past the last readable bit."""
        return self._end

    @property
    def byte_aligned(self):
        return self._pos % 8 == 0

    def bits_left(self):
        return self._end - self._pos

    def _need(self, n, name):
        if self._pos + n > self._end:
            raise TruncatedBitstreamError(
                f"bitstream ends inside {name or 'an element'}: needs {n} bits, "
                f"{self._end - self._pos} left", element=name, bit_offset=self._pos)

    def _take(self, n):
        # Caller has checked bounds. Works for any n (u(256)/u(512) included).
        if n == 0:
            return 0
        pos = self._pos
        first = pos >> 3
        last = (pos + n + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        value = (chunk >> ((last << 3) - pos - n)) & ((1 << n) - 1)
        self._pos = pos + n
        return value

    # -- descriptors ------------------------------------------------------------------------
    def u(self, n, name=None):
        """u(n): unsigned, n bits, MSB first (n up to 64; use bits() for longer fields)."""
        if not 0 <= n <= 64:
            raise ValueError(f"u(n) supports 0 <= n <= 64, got {n}")
        self._need(n, name)
        return self._take(n)

    def bits(self, n, name=None):
        """A bit string of any length as an int, MSB first (u(256), u(512))."""
        if n < 0:
            raise ValueError(f"negative bit count {n}")
        self._need(n, name)
        return self._take(n)

    def i(self, n, name=None):
        """i(n): two's complement, n bits."""
        if not 1 <= n <= 64:
            raise ValueError(f"i(n) supports 1 <= n <= 64, got {n}")
        self._need(n, name)
        v = self._take(n)
        return v - (1 << n) if v >> (n - 1) else v

    def ue(self, k, name=None):
        """ue(k): Exp-Golomb of order k: z zeros, a one, then k + z bits; (2^z - 1)·2^k + r."""
        start = self._pos
        z = 0
        while True:
            if self._pos >= self._end:
                raise TruncatedBitstreamError(
                    f"bitstream ends inside the ue({k}) prefix of {name or 'an element'}",
                    element=name, bit_offset=start)
            if self._take(1):
                break
            z += 1
            if z > MAX_UE_PREFIX:
                self._pos = start
                raise SyntaxValueError(
                    f"ue({k}) prefix longer than {MAX_UE_PREFIX} zero bits",
                    element=name, bit_offset=start)
        if self._pos + k + z > self._end:
            p = self._pos
            self._pos = start
            raise TruncatedBitstreamError(
                f"bitstream ends inside the ue({k}) suffix of {name or 'an element'}: needs "
                f"{k + z} bits, {self._end - p} left", element=name, bit_offset=start)
        r = self._take(k + z)
        return (((1 << z) - 1) << k) + r

    def ie(self, k, name=None):
        """ie(k): signed Exp-Golomb; x odd -> (x + 1) / 2, x even -> -x / 2."""
        x = self.ue(k, name)
        return (x + 1) >> 1 if x & 1 else -(x >> 1)

    def flt(self, name=None):
        """flt(32): four bytes, least significant byte first (REF-QUIRK: NNCodec byte order)."""
        self._need(32, name)
        raw = bytes(self._take(8) for _ in range(4))
        return struct.unpack("<f", raw)[0]

    def st(self, name=None):
        """st(v): byte-aligned UTF-8 string terminated by 0x00."""
        if self._pos % 8:
            raise SyntaxValueError("st(v) does not start on a byte boundary",
                                   element=name, bit_offset=self._pos)
        start = self._pos >> 3
        end = self._end >> 3
        data = self._data
        nul = bytes(data[start:end]).find(b"\x00")
        if nul < 0:
            raise TruncatedBitstreamError(
                f"bitstream ends inside the string {name or ''} (no 0x00 terminator)".replace("  ", " "),
                element=name, bit_offset=self._pos)
        raw = bytes(data[start:start + nul])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SyntaxValueError(f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                   element=name, bit_offset=self._pos, value=raw) from None
        self._pos = (start + nul + 1) * 8
        return text

    def byte_alignment(self, strict=False, name="byte_alignment()"):
        """byte_alignment(): a 1 then 0s up to the byte boundary; always >= 1 bit.

        Lenient by default like NNCodec (REF-QUIRK: the bits are skipped unchecked); ``strict=True``
        checks the 1 and the 0s. Returns (number of bits, their value).
        """
        n = 8 - (self._pos % 8)
        start = self._pos
        self._need(n, name)
        v = self._take(n)
        if strict and v != 1 << (n - 1):
            raise SyntaxValueError(f"byte_alignment() bits are {v:0{n}b}, expected 1 then zeros",
                                   element=name, bit_offset=start, value=v)
        return n, v

    def read_bytes(self, n, name=None):
        """n whole bytes from a byte-aligned position."""
        if self._pos % 8:
            raise SyntaxValueError("byte string does not start on a byte boundary",
                                   element=name, bit_offset=self._pos)
        self._need(8 * n, name)
        s = self._pos >> 3
        self._pos += 8 * n
        return bytes(self._data[s:s + n])
