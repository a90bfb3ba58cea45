"""load_model / save_model: read and write the model files that nnr_encode takes and nnr_decode
writes (not part of ISO/IEC 15938-17, which codes tensors; this is the adapter around it).

Each format lives in its own module (fmt_pt, fmt_safetensors, fmt_npz, fmt_h5) with a
load(path, LoadOptions) -> Model and a save(path, model, same_kind) pair. torch, safetensors and h5py
are imported only inside those functions, so importing nnr.modelio stays numpy-only.

Files are input from anywhere, so the loaders check before they read (nnr.modelio.guard): the
format's signature (a text file named x.pt is refused as "not a PyTorch file", not handed to
torch), the tensors' declared sizes against a byte budget (max_bytes, default guard.MAX_BYTES) and,
where the format stores raw data, against the file's actual size; whatever the packages raise
comes out as an EncoderConfigError.
"""
import importlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from nnr.errors import EncoderConfigError, UnsupportedFeatureError
from nnr.modelio.guard import MAX_BYTES

log = logging.getLogger("nnr")

FORMATS = ("pt", "safetensors", "npz", "h5")
_EXTENSIONS = {".pt": "pt", ".pth": "pt", ".safetensors": "safetensors", ".npz": "npz",
               ".h5": "h5", ".hdf5": "h5"}
MAX_NAME_BYTES = 65535
_ALIASES = {"pth": "pt", "torch": "pt", "hdf5": "h5", "keras": "h5"}
# package to import -> (pip distribution, nnr extra)
_PACKAGES = {"torch": ("torch", "torch"), "safetensors": ("safetensors", "safetensors"),
             "h5py": ("h5py", "h5")}


@dataclass
class Model:
    """A model file's tensors as the codec sees them, plus what is needed to write it back.

    tensors: name -> ndarray, in the file's order; float32 for every floating-point tensor,
        the file's integer type for integers, uint8 0/1 for bool (see nnr.modelio.dtypes).
    dtypes: name -> original dtype name ("float32", "float16", "bfloat16", "int64", "bool", ...).
    fmt: "pt", "safetensors", "npz" or "h5".
    extras: format-specific data for save_model (checkpoint entries around a state_dict, the
        safetensors metadata, the HDF5 group tree with its attributes, ...). Opaque to the codec;
        may hold torch/h5py-derived Python objects and is not guaranteed to be JSON-serialisable.
    """
    tensors: dict
    dtypes: dict
    fmt: str
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """load_model's options, as the format modules receive them (see load_model)."""
    allow_pickle: bool = False
    allow_float64: bool = False
    mmap: bool = False
    allow_external: bool = False
    max_bytes: object = MAX_BYTES


def require(module, action, fmt):
    """Import an optional package, or raise UnsupportedFeatureError telling how to install it."""
    dist, extra = _PACKAGES[module]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UnsupportedFeatureError(
            f"{action} .{fmt} needs the '{dist}' package: pip install nnr[{extra}]") from err


def detect_format(path, fmt=None):
    """The format name for `path`: `fmt` if given, else from the file extension."""
    if fmt is not None:
        name = _ALIASES.get(str(fmt).lower().lstrip("."), str(fmt).lower().lstrip("."))
        if name not in FORMATS:
            raise EncoderConfigError(f"unknown model format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return name
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _EXTENSIONS:
        raise EncoderConfigError(
            f"cannot tell the model format of {os.fspath(path)!r} from its extension {ext or '(none)'!r}; "
            f"known: {', '.join(sorted(_EXTENSIONS))}; or pass fmt= one of {', '.join(FORMATS)}")
    return _EXTENSIONS[ext]


def _module(fmt):
    return importlib.import_module(f"nnr.modelio.fmt_{fmt}")


def load_model(path, *, fmt=None, allow_pickle=False, allow_float64=False, mmap=False,
               allow_external=False, max_bytes=MAX_BYTES) -> Model:
    """Read a model file into a Model.

    allow_pickle: PyTorch files only. Files are read with torch.load(weights_only=True); a file
        that needs arbitrary unpickling (e.g. a whole nn.Module) is refused with an
        EncoderConfigError unless this is True. Only pass it for files you trust.
    allow_float64: code float64 tensors as float32 (restored as float64 on save) instead of
        refusing them.
    mmap: safetensors only: memory-map the tensors instead of reading them (nnr_encode streams a
        model tensor by tensor this way).
    allow_external: HDF5 only. A dataset whose data lives in other files (external raw storage,
        virtual datasets) is refused with an EncoderConfigError unless this is True, so that a
        file cannot make nnr read (and code) /etc/passwd or any other file it names. External
        links are kept as links and never followed either way.
    max_bytes: the most bytes of tensors the file may make the loader allocate, counted as the
        codec holds them (floats as float32 or wider) and checked against each tensor's declared
        shape before it is read; None for no limit. Tensors memory-mapped with mmap=True do not
        count (the file's own size bounds them).
    Raises FileNotFoundError for a missing file (OSError if it cannot be opened),
    ResourceLimitError past max_bytes, EncoderConfigError for an unknown format or an unreadable
    file or tensor, UnsupportedFeatureError when the format's package is missing.
    """
    name = detect_format(path, fmt)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {os.fspath(path)}")
    if os.path.isdir(path):
        raise EncoderConfigError(f"{os.fspath(path)!r} is a directory, not a model file")
    options = LoadOptions(allow_pickle=bool(allow_pickle), allow_float64=bool(allow_float64),
                          mmap=bool(mmap), allow_external=bool(allow_external), max_bytes=max_bytes)
    model = _module(name).load(path, options)
    log.debug("loaded %d tensors from %s (%s)", len(model.tensors), os.fspath(path), name)
    return model


def _check_name(name):
    """A tensor name every format can store: a string of UTF-8 text (names decoded from a stream
    may hold undecodable bytes) without NUL, at most MAX_NAME_BYTES long (a zip member's limit)."""
    if not isinstance(name, str):
        raise EncoderConfigError(f"tensor name {name!r} is a {type(name).__name__}, not a string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise EncoderConfigError(f"tensor name {name[:80]!r} is not valid UTF-8 text") from None
    if "\0" in name or size > MAX_NAME_BYTES:
        raise EncoderConfigError(f"tensor name {name[:80]!r} ({size} bytes) holds a NUL or is longer than "
                                 f"{MAX_NAME_BYTES} bytes: no model file format can store it")


def save_model(path, model: Model, *, fmt=None) -> None:
    """Write `model` to `path` atomically, restoring each tensor's original dtype.

    The format comes from `fmt`, else the extension, else model.fmt. Saved in the model's own
    format, the file keeps the structure recorded in model.extras (checkpoint entries, metadata,
    HDF5 groups and attributes); in another format only the tensors are written.
    """
    try:
        name = detect_format(path, fmt)
    except EncoderConfigError:
        if fmt is not None or not model.fmt:
            raise
        name = detect_format(path, model.fmt)
    for key, value in model.tensors.items():
        _check_name(key)
        if not isinstance(value, np.ndarray):
            raise EncoderConfigError(f"tensor {key!r} is a {type(value).__name__}, not a numpy array")
    same_kind = name == model.fmt
    if not same_kind and model.extras:
        log.info("saving a %s model as %s: only its tensors are kept", model.fmt, name)
    _module(name).save(path, model, same_kind=same_kind)
