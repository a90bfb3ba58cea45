"""Dtype rules between model files and the codec.

The codec sees float32 for every floating-point tensor and the file's own integer type for integer
tensors; the original dtype is recorded by name so that saving restores it:

- float32: as is.  float16, bfloat16: widened to float32 (exact), narrowed back on save.
- float64: refused unless allow_float64 (then coded as float32, restored as float64 on save).
- int8/16/32/64, uint8/16/32/64: kept (the encoder codes integers losslessly and checks ranges).
- bool: coded as uint8 0/1, restored as bool.
- complex, object, strings, structured, datetime and anything else: EncoderConfigError.
"""
import numpy as np

from nnr.errors import EncoderConfigError
from nnr_core.encoder.prepare import narrowed_to_float32

INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def option_error(template, option, **fields):
    """An EncoderConfigError whose message tells to pass the keyword `option`: "{option}" in
    `template` reads "option=True" here; a front end re-spells it (e.g. the command line's
    --allow-pickle) from err.option, err.template and err.fields."""
    err = EncoderConfigError(template.format(option=f"{option}=True", **fields))
    err.option, err.template, err.fields = option, template, fields
    return err


def to_codec(name, array, *, allow_float64=False):
    """Return (codec array, original dtype name) for the tensor `name`."""
    array = np.asarray(array)
    dt = array.dtype
    if dt.name == "bfloat16":  # an ml_dtypes array handed in by a caller
        return array.astype(np.float32), "bfloat16"
    if not dt.isnative:
        array = array.astype(dt.newbyteorder("="))
        dt = array.dtype
    kind = dt.kind
    if kind == "b":
        return array.astype(np.uint8), "bool"
    if kind in "iu" and dt.name in INTEGER_DTYPES:
        return array, dt.name
    if kind == "f" and dt.name == "float32":
        return array, "float32"
    if kind == "f" and dt.name == "float16":
        return array.astype(np.float32), "float16"
    if kind == "f" and dt.name == "float64":
        if not allow_float64:
            raise option_error(
                "tensor {name!r} is float64; NNR codes floating-point weights as float32. Pass "
                "{option} to code it as float32 (precision beyond float32 is lost) and "
                "restore float64 on save", "allow_float64", name=name)
        return narrowed_to_float32(name, array), "float64"
    raise EncoderConfigError(
        f"tensor {name!r} has dtype {dt} which NNR cannot code: only float32/float16/bfloat16 "
        f"(float64 with allow_float64), integer and bool tensors are supported")


# PyTorch quantized dtypes: their integer representation is what the codec carries (NNR_PT_INT)
QUANTIZED_DTYPES = {"qint8": "int8", "quint8": "uint8", "qint32": "int32"}


def restore(name, array, dtype):
    """Return the codec-side `array` converted back to its original `dtype` (a name from to_codec).

    bfloat16 comes back as float32 holding bfloat16-rounded values; the format module stores it
    (see f32_to_bf16_bits). Integer targets refuse values that are not integers or do not fit.
    """
    array = np.asarray(array)
    if dtype is None:
        return array
    dtype = QUANTIZED_DTYPES.get(dtype, dtype)       # the integer representation; its quantizer aside
    if dtype in ("float32", "float16", "float64"):
        if array.dtype.kind not in "fiub":
            raise EncoderConfigError(f"tensor {name!r}: cannot restore dtype {array.dtype} to {dtype}")
        return array.astype(dtype, copy=False)
    if dtype == "bfloat16":
        return bf16_bits_to_f32(f32_to_bf16_bits(array.astype(np.float32, copy=False)))
    if dtype == "bool":
        if array.dtype.kind != "b" and array.size and not np.all((array == 0) | (array == 1)):
            raise EncoderConfigError(f"tensor {name!r} was bool but holds values other than 0 and 1")
        return array.astype(bool, copy=False)
    if dtype in INTEGER_DTYPES:
        if array.dtype.kind == "f":
            if array.size and not np.all(np.isfinite(array) & (array == np.round(array))):
                raise EncoderConfigError(f"tensor {name!r} was {dtype} but holds non-integer values")
        elif array.dtype.kind not in "iub":
            raise EncoderConfigError(f"tensor {name!r}: cannot restore dtype {array.dtype} to {dtype}")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise EncoderConfigError(
                f"tensor {name!r} was {dtype} but holds values in [{array.min()}, {array.max()}], "
                f"outside [{info.min}, {info.max}]")
        return array.astype(dtype, copy=False)
    raise EncoderConfigError(f"tensor {name!r}: unknown original dtype {dtype!r}")


def bf16_bits_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values):
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even as torch does; NaN stays a
    (quiet) NaN with its sign."""
    u = np.asarray(values, dtype=np.float32, order="C").view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if np.any(nan):
        rounded = np.where(nan, ((u >> 16) | np.uint32(0x0040)).astype(np.uint16), rounded)
    return rounded
