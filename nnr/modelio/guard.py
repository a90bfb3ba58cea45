"""What the model-file loaders check before trusting a file: what its first bytes look like, how
many bytes of tensors it may make nnr allocate, and turning a package's own exceptions (torch, h5py,
zipfile, safetensors) into one-line EncoderConfigErrors."""
import math
import os
import re
import zipfile
from contextlib import contextmanager

from nnr.errors import EncoderConfigError, NNRError, ResourceLimitError

# The default bound on the tensor bytes one model file may make the loader allocate (8 GiB: two
# billion float32 parameters). A file whose tensors, as the codec holds them (floats as float32,
# or wider), add up to more raises ResourceLimitError before anything is read.
MAX_BYTES = 8 << 30

_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "an empty zip archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"), (b"\x93NUMPY", "a .npy array (not .npz)"),
    (b"\x80", "a pickle"), (b"\x1f\x8b", "gzip data"), (b"\x08", "protobuf data (an ONNX model?)"),
)
_HEAD = 64


def head(path, size=_HEAD):
    """The file's first `size` bytes (OSError if it cannot be opened)."""
    with open(path, "rb") as f:
        return f.read(size)


def describe(data):
    """A short phrase for what bytes `data` (a file's start) look like, for error messages."""
    if not data:
        return "an empty file"
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return what
    if len(data) >= 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < 1 << 27:
        return "a safetensors file"
    text = data.decode("utf-8", "replace").rstrip("\ufffd")  # the cut may split a character
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"text {text[:24]!r}"
    return "binary data starting " + data[:8].hex(" ")


def refuse(path, what, expected, data):
    """EncoderConfigError: `path` is not `what` ("a PyTorch file"): we expected `expected` and got
    what `data` (its first bytes) looks like."""
    if not data:
        return EncoderConfigError(f"{os.fspath(path)}: not {what}: empty file")
    return EncoderConfigError(f"{os.fspath(path)}: not {what}: expected {expected}, got {describe(data)}")


def one_line(err, limit=300):
    """`err` as one line of at most `limit` characters: the type name and the text's first lines."""
    text = re.sub(r"\s+", " ", str(err)).strip()
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextmanager
def reading(path, what, verb="read"):
    """Turn any exception a package raises while reading (or writing: verb) `path` into an
    EncoderConfigError ("cannot read PATH as WHAT: Type: message"); NNRErrors pass through,
    MemoryError becomes a ResourceLimitError."""
    try:
        yield
    except NNRError:
        raise
    except MemoryError as err:
        raise ResourceLimitError(f"{os.fspath(path)}: out of memory to {verb} it as {what}") from err
    except RecursionError as err:
        raise EncoderConfigError(f"cannot {verb} {os.fspath(path)} as {what}: nested too deeply") from err
    except Exception as err:  # the packages raise anything: KeyError, struct.error, OSError, ...
        raise EncoderConfigError(f"cannot {verb} {os.fspath(path)} as {what}: {one_line(err)}") from err


def zip_or_refuse(path, what, expected, data):
    """Return if `path` is a readable zip archive, else raise the EncoderConfigError saying what it
    is instead (a zip whose end, with its central directory, is cut off says so)."""
    if zipfile.is_zipfile(path):
        return
    if data.startswith(b"PK\x03\x04"):
        raise EncoderConfigError(f"{os.fspath(path)}: not readable as {what}: a zip archive without "
                                 f"its central directory (truncated or damaged)")
    raise refuse(path, what, expected, data)


class Budget:
    """The tensor bytes a file may make the loader allocate, drawn down tensor by tensor."""

    def __init__(self, path, max_bytes=MAX_BYTES):
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise EncoderConfigError(f"max_bytes must be a non-negative int or None, not {max_bytes!r}")
        self.path, self.limit, self.used = os.fspath(path), max_bytes, 0

    def take(self, name, shape, itemsize, *, what="tensor"):
        """Count a tensor of `shape` whose elements take `itemsize` bytes each (as the codec holds
        them); ResourceLimitError once the file's total passes the limit. Returns its byte count."""
        shape = tuple(int(d) for d in shape)
        return self.take_bytes(name, math.prod(shape) * int(itemsize), what=f"{what} {name!r} of shape {shape}")

    def take_bytes(self, name, nbytes, *, what=None):
        """Count `nbytes` bytes for `name` (described as `what`); see take."""
        self.used += nbytes
        if self.limit is not None and self.used > self.limit:
            raise ResourceLimitError(
                f"{self.path}: {what or repr(name)} takes {nbytes} bytes; the file's tensors would then "
                f"take {self.used} bytes, more than the limit of {self.limit} (max_bytes; pass a "
                f"larger max_bytes to load_model to allow it)")
        return nbytes


def codec_itemsize(dtype):
    """Bytes per element as the codec holds a tensor of numpy `dtype`: floats widen to float32."""
    return max(dtype.itemsize, 4) if dtype.kind == "f" else dtype.itemsize
