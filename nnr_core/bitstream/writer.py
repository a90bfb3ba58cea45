"""Bit writer for the NNR descriptors of ISO/IEC 15938-17 (HLS §1.2).

The twin of ``reader.BitReader``: the same descriptors, MSB first, every value range-checked before
it is written (``SyntaxValueError`` naming the element when ``name=`` is given).
"""
import struct

from nnr_core.errors import SyntaxValueError


def _check_int(value, name, desc):
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numbers
            if isinstance(value, numbers.Integral):
                return int(value)
        except Exception:  # pragma: no cover
            pass
        raise SyntaxValueError(f"{desc} needs an integer, got {type(value).__name__}",
                               element=name, value=value)
    return value


class BitWriter:
    """MSB-first bit writer; ``getvalue()`` returns the bytes (zero-padded to a byte boundary)."""

    __slots__ = ("_buf", "_acc", "_nacc")

    def __init__(self):
        self._buf = bytearray()
        self._acc = 0     # pending bits not yet forming a whole byte
        self._nacc = 0    # how many (0..7)

    @property
    def pos(self):
        return len(self._buf) * 8 + self._nacc

    @property
    def byte_aligned(self):
        return self._nacc == 0

    def _put(self, value, n):
        if n == 0:
            return
        acc = (self._acc << n) | value
        total = self._nacc + n
        rest = total & 7
        full = total >> 3
        if full:
            self._buf += (acc >> rest).to_bytes(full, "big")
        self._acc = acc & ((1 << rest) - 1)
        self._nacc = rest

    def u(self, value, n, name=None):
        value = _check_int(value, name, f"u({n})")
        if not 0 <= value < (1 << n):
            raise SyntaxValueError(f"value does not fit u({n})", element=name, value=value,
                                   allowed=f"0..{(1 << n) - 1}")
        self._put(value, n)

    bits = u

    def i(self, value, n, name=None):
        value = _check_int(value, name, f"i({n})")
        lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1
        if not lo <= value <= hi:
            raise SyntaxValueError(f"value does not fit i({n})", element=name, value=value,
                                   allowed=f"{lo}..{hi}")
        self._put(value & ((1 << n) - 1), n)

    def ue(self, value, k, name=None):
        value = _check_int(value, name, f"ue({k})")
        if value < 0:
            raise SyntaxValueError(f"ue({k}) cannot code a negative value", element=name,
                                   value=value, allowed="0..")
        # z = number of steps i with x >= 2^(k+i): z = floor(log2(x / 2^k + 1)).
        z = ((value >> k) + 1).bit_length() - 1
        if z > 63:
            raise SyntaxValueError(f"value too large for ue({k})", element=name, value=value)
        r = value - (((1 << z) - 1) << k)
        self._put(1, z + 1)
        self._put(r, k + z)

    def ie(self, value, k, name=None):
        value = _check_int(value, name, f"ie({k})")
        self.ue(2 * value - 1 if value > 0 else -2 * value, k, name)

    def flt(self, value, name=None):
        """flt(32), least significant byte first (REF-QUIRK: NNCodec byte order)."""
        try:
            value = float(value)
            raw = struct.pack("<f", value)
        except (TypeError, ValueError, OverflowError):
            raise SyntaxValueError("value is not representable as float32", element=name,
                                   value=value) from None
        # Finite doubles are rounded to the nearest float32 (the descriptor's precision); values
        # beyond the float32 range raise OverflowError above.
        for b in raw:
            self._put(b, 8)

    def st(self, s, name=None):
        if not isinstance(s, str):
            raise SyntaxValueError("st(v) needs a str", element=name, value=s)
        if self._nacc:
            raise SyntaxValueError("st(v) must start on a byte boundary", element=name,
                                   bit_offset=self.pos)
        try:
            raw = s.encode("utf-8")
        except UnicodeEncodeError:
            raise SyntaxValueError("st(v) string is not encodable as UTF-8", element=name,
                                   value=s) from None
        if b"\x00" in raw:
            raise SyntaxValueError("st(v) string must not contain NUL", element=name, value=s)
        self._buf += raw + b"\x00"

    def byte_alignment(self, name="byte_alignment()"):
        """A 1 bit then 0 bits to the next byte boundary (always at least one bit)."""
        n = 8 - self._nacc
        self._put(1 << (n - 1), n)
        return n, 1 << (n - 1)

    def write_bytes(self, data, name=None):
        if self._nacc:
            raise SyntaxValueError("byte string must start on a byte boundary", element=name,
                                   bit_offset=self.pos)
        self._buf += data

    def getvalue(self):
        if self._nacc:
            return bytes(self._buf) + bytes([self._acc << (8 - self._nacc)])
        return bytes(self._buf)
