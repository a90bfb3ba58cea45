"""NumPy .npz model files: one array per zip member, named by the member (without '.npy').

Each member's .npy header (shape, dtype) is read and checked before its data: object arrays
(pickled Python objects) are refused without unpickling, the declared size is drawn from the
load's byte budget and must fit in the member's own (uncompressed) size, so a small file cannot
declare a huge array, and a deflated member cannot inflate past what the zip says it holds.
"""
import logging
import math
import zipfile

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import restore, to_codec
from nnr.modelio.guard import Budget, codec_itemsize, head, reading, zip_or_refuse
from nnr.modelio.model import Model

log = logging.getLogger("nnr")
_FORMAT = np.lib.format


def _header(member, name, path):
    """(shape, fortran_order, dtype, header bytes) of the .npy member `name`."""
    try:
        version = _FORMAT.read_magic(member)
    except ValueError as err:
        raise EncoderConfigError(f"member {name!r} of {path!s} is not a .npy array: {err}") from None
    if version == (1, 0):
        shape, fortran, dtype = _FORMAT.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = _FORMAT.read_array_header_2_0(member)
    else:  # 3.0 only adds UTF-8 field names of structured dtypes, which NNR cannot code anyway
        raise EncoderConfigError(f"member {name!r} of {path!s} is .npy format {version[0]}.{version[1]}, "
                                 f"which only holds structured arrays; NNR codes plain numeric arrays")
    return shape, fortran, dtype, member.tell()


def _check(zf, info, name, path, budget):
    """Read the header of member `info` and check it before any of its data is read."""
    if not info.filename.endswith(".npy"):
        raise EncoderConfigError(f"member {info.filename!r} of {path!s} is not a .npy array")
    with zf.open(info) as member:
        shape, _, dtype, offset = _header(member, name, path)
    if dtype.hasobject:
        raise EncoderConfigError(f"tensor {name!r} in {path!s} is an object array (pickled Python "
                                 f"objects, dtype {dtype}); NNR never unpickles .npz members")
    budget.take(name, shape, codec_itemsize(dtype))
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes > info.file_size:
        raise EncoderConfigError(
            f"tensor {name!r} in {path!s} declares shape {shape} of {dtype} ({nbytes} bytes) but its "
            f"member holds {max(info.file_size - offset, 0)} bytes of data (truncated or forged)")


def load(path, options):
    zip_or_refuse(path, "a .npz file", "a zip archive of .npy arrays (np.savez)", head(path))
    budget = Budget(path, options.max_bytes)
    tensors, dtypes = {}, {}
    with reading(path, ".npz"), zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        compressed = any(i.compress_type != zipfile.ZIP_STORED for i in infos)
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name in tensors:
                raise EncoderConfigError(f"{path!s} holds member {info.filename!r} twice")
            _check(zf, info, name, path, budget)
            with zf.open(info) as member:
                value = _FORMAT.read_array(member, allow_pickle=False)
            tensors[name], dtypes[name] = to_codec(name, value, allow_float64=options.allow_float64)
    return Model(tensors, dtypes, "npz", {"compressed": compressed})


def save(path, model, *, same_kind):
    compressed = bool(model.extras.get("compressed")) if same_kind else False
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with atomic_output(path) as f:
        # Written member by member rather than with np.savez, whose keyword arguments would
        # clash with tensors named "file" or "allow_pickle".
        with zipfile.ZipFile(f, "w", compression=mode, allowZip64=True) as zf:
            for name, array in model.tensors.items():
                dtype = model.dtypes.get(name)
                value = restore(name, array, dtype)
                if dtype == "bfloat16":
                    # numpy has no bfloat16: keep the bfloat16 values, widened to float32 (exact).
                    log.warning("tensor %r: .npz has no bfloat16; written as float32", name)
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
