"""DeepCABAC entropy decoder for NNR payloads (NNC-CABAC-QUANT.md; API in README.md).

``decode_payload`` and ``CabacDecoder`` come from the Cython module ``_decoder``, or from the
pure-Python twin ``pytwin`` when the environment variable ``NNR_PURE_PYTHON=1`` is set.  Both are
resolved lazily, so ``nnr_core.cabac.pytwin`` can be imported without the compiled extension and
vice versa.
"""
import os

from nnr_core.cabac.params import (VARIANT_NNCODEC1, VARIANT_NNCODEC2, TensorCoding,
                                   TensorResult)

__all__ = ["decode_payload", "CabacDecoder", "TensorCoding", "TensorResult",
           "VARIANT_NNCODEC1", "VARIANT_NNCODEC2"]

_LAZY = ("decode_payload", "CabacDecoder")


def _implementation():
    if os.environ.get("NNR_PURE_PYTHON") == "1":
        from nnr_core.cabac import pytwin as impl
    else:
        from nnr_core.cabac import _decoder as impl
    return impl


def __getattr__(name):
    if name in _LAZY:
        impl = _implementation()
        for n in _LAZY:
            globals()[n] = getattr(impl, n)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
