"""nnr: MPEG NNR / NNC (ISO/IEC 15938-17) neural-network compression."""
from nnr.errors import (BitstreamError, ConstraintViolationError, EncoderConfigError,
                        EntropyDecodingError, NNRError, ResourceLimitError, SyntaxValueError,
                        TruncatedBitstreamError, UnitSizeMismatchError, UnsupportedFeatureError)

__version__ = "0.1.0"


def __getattr__(name):
    # The codec modules load on first use, so `import nnr` stays cheap and numpy-only.
    if name in ("decode", "Decoder", "DecodedTensor"):
        from nnr import decoder
        return getattr(decoder, name)
    if name in ("encode", "Encoder", "EncoderConfig"):
        from nnr import encoder
        return getattr(encoder, name)
    if name in ("encode_onnx", "decode_onnx", "encode_module", "decode_module"):
        from nnr import topology
        return getattr(topology, name)
    if name == "importance":
        from nnr.rd.importance import importance
        return importance
    raise AttributeError(f"module 'nnr' has no attribute {name!r}")


__all__ = [
    "decode", "Decoder", "DecodedTensor", "encode", "Encoder", "EncoderConfig",
    "encode_onnx", "decode_onnx", "encode_module", "decode_module", "importance", "NNRError", "BitstreamError", "TruncatedBitstreamError",
    "SyntaxValueError", "ConstraintViolationError", "UnitSizeMismatchError", "EntropyDecodingError",
    "UnsupportedFeatureError", "ResourceLimitError", "EncoderConfigError", "__version__",
]
