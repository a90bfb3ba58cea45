"""The nnr error hierarchy: every failure nnr reports is an NNRError (defined in nnr_core.errors,
which the codec core raises too; this module re-exports it for the public API)."""
from nnr_core.errors import (BitstreamError, ConstraintViolationError, EncoderConfigError,  # noqa: F401
                             EntropyDecodingError, NNRError, ResourceLimitError, SyntaxValueError,
                             TruncatedBitstreamError, UnitSizeMismatchError, UnsupportedFeatureError)

__all__ = [
    "NNRError", "BitstreamError", "TruncatedBitstreamError", "SyntaxValueError",
    "ConstraintViolationError", "UnitSizeMismatchError", "EntropyDecodingError",
    "UnsupportedFeatureError", "ResourceLimitError", "EncoderConfigError",
]
