"""The nnr error hierarchy: every failure nnr and nnr_core report is an NNRError (nnr.errors
re-exports it)."""


class NNRError(Exception):
    """Root of every error nnr raises; an error about the input names where it is, when known.

    unit_index, element (syntax element path), bit_offset (absolute, in the bitstream), value and
    allowed are attributes (None when unknown) and are appended to the message on one line."""

    def __init__(self, message="", *, unit_index=None, element=None, bit_offset=None,
                 value=None, allowed=None):
        self.reason = message
        self.unit_index = unit_index
        self.element = element
        self.bit_offset = bit_offset
        self.value = value
        self.allowed = allowed
        where = _where(unit_index, element, bit_offset, value, allowed)
        super().__init__(f"{message} ({where})" if where else message)

    def located(self, *, unit_index=None, element=None, bit_offset=None):
        """Return a copy of this error with missing location fields filled in."""
        err = type(self)(
            self.reason,
            unit_index=self.unit_index if self.unit_index is not None else unit_index,
            element=self.element or element,
            bit_offset=self.bit_offset if self.bit_offset is not None else bit_offset,
            value=self.value, allowed=self.allowed)
        return err

    def in_unit(self, unit_index, bit_base):
        """Return a copy for an error found inside a unit's payload: bit offsets relative to the
        payload become absolute (bit_base = 8 x the payload's first byte)."""
        bit = None if self.bit_offset is None else bit_base + self.bit_offset
        return type(self)(self.reason, unit_index=unit_index, element=self.element, bit_offset=bit,
                          value=self.value, allowed=self.allowed)


def _where(unit_index=None, element=None, bit_offset=None, value=None, allowed=None):
    parts = []
    if unit_index is not None:
        parts.append(f"unit {unit_index}")
    if element:
        parts.append(f"element {element}")
    if bit_offset is not None:
        parts.append(f"bit {bit_offset} (byte {bit_offset // 8}.{bit_offset % 8})")
    if value is not None:
        parts.append(f"value {value!r}")
    if allowed is not None:
        parts.append(f"allowed {allowed}")
    return ", ".join(parts)


class BitstreamError(NNRError, ValueError):
    """A bitstream violates the syntax or semantics of ISO/IEC 15938-17."""


class TruncatedBitstreamError(BitstreamError, EOFError):
    """The bitstream ends before a syntax element or unit is complete."""


class SyntaxValueError(BitstreamError):
    """A syntax element holds a value outside its allowed range."""


class ConstraintViolationError(BitstreamError):
    """Units or elements violate a cross-element or ordering constraint."""


class UnitSizeMismatchError(BitstreamError):
    """nnr_unit_size disagrees with the bytes the unit's content occupies."""


class EntropyDecodingError(BitstreamError):
    """The arithmetic-coded payload is inconsistent (terminating bin, length, overread)."""


class UnsupportedFeatureError(NNRError, NotImplementedError):
    """Valid input that uses a feature nnr does not implement or that has no public syntax."""


class ResourceLimitError(NNRError):
    """Decoding would exceed a resource limit (Decoder(max_total_elements=, max_topology_bytes=),
    or memory the machine cannot allocate)."""


class EncoderConfigError(NNRError, ValueError):
    """An encoder option or input tensor is invalid."""


__all__ = [
    "NNRError", "BitstreamError", "TruncatedBitstreamError", "SyntaxValueError",
    "ConstraintViolationError", "UnitSizeMismatchError", "EntropyDecodingError",
    "UnsupportedFeatureError", "ResourceLimitError", "EncoderConfigError",
]
