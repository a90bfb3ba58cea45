"""DeepCABAC entropy decoder and encoder for NNR payloads (spec/CABAC.md; API in README.md).

``decode_payload`` and ``CabacDecoder`` come from the Cython module ``_decoder``, ``encode_payload``
and ``CabacEncoder`` from the Cython module ``_encoder``; with the environment variable
``NNR_PURE_PYTHON=1`` they come from the pure-Python twins ``pytwin`` and ``pytwin_enc``.  All are
resolved lazily, so the twins can be imported without the compiled extensions and vice versa.
"""
import os

from nnr_core.cabac.params import (VARIANT_NNCODEC1, VARIANT_NNCODEC2, TensorCoding,
                                   TensorEncoding, TensorResult)

__all__ = ["decode_payload", "CabacDecoder", "encode_payload", "CabacEncoder", "TensorCoding",
           "TensorEncoding", "TensorResult", "VARIANT_NNCODEC1", "VARIANT_NNCODEC2"]

_LAZY_DECODER = ("decode_payload", "CabacDecoder")
_LAZY_ENCODER = ("encode_payload", "CabacEncoder")


def _pure_python():
    return os.environ.get("NNR_PURE_PYTHON") == "1"


def _implementation():
    if _pure_python():
        from nnr_core.cabac import pytwin as impl
    else:
        from nnr_core.cabac import _decoder as impl
    return impl


def _encoder_implementation():
    if _pure_python():
        from nnr_core.cabac import pytwin_enc as impl
    else:
        from nnr_core.cabac import _encoder as impl
    return impl


def __getattr__(name):
    for names, resolve in ((_LAZY_DECODER, _implementation), (_LAZY_ENCODER, _encoder_implementation)):
        if name in names:
            impl = resolve()
            for n in names:
                globals()[n] = getattr(impl, n)
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
