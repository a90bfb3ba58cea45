"""NumPy .npz model files: one array per zip member, named by the member (without '.npy')."""
import logging
import zipfile

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.fileio import atomic_output
from nnr.modelio.dtypes import restore, to_codec
from nnr.modelio.model import Model

log = logging.getLogger("nnr")


def load(path, *, allow_pickle=False, allow_float64=False):
    tensors, dtypes = {}, {}
    try:
        with zipfile.ZipFile(path) as zf:
            compressed = any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise EncoderConfigError(f"cannot read {path!s} as .npz: {err}") from err
    with npz:
        for name in npz.files:
            try:
                value = npz[name]
            except ValueError as err:  # object arrays need pickle, which we never allow
                raise EncoderConfigError(f"tensor {name!r} in {path!s} cannot be read: {err}") from err
            if not isinstance(value, np.ndarray):
                raise EncoderConfigError(f"member {name!r} of {path!s} is not a .npy array")
            tensors[name], dtypes[name] = to_codec(name, value, allow_float64=allow_float64)
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
