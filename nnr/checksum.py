"""Checksums of decoded output, as the conformance suite and `nnr_decode --verify` use them."""
import hashlib

import numpy as np


def tensor_sha256(array: np.ndarray) -> str:
    """SHA-256 of a tensor's raw C-order little-endian bytes."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def output_sha256(tensors: dict) -> str:
    """One SHA-256 over a whole decoded bitstream: for each tensor in order, its UTF-8 name,
    a NUL byte, its dtype string (e.g. '<f4'), a NUL byte, its shape as text, a NUL byte and
    its raw C-order bytes."""
    h = hashlib.sha256()
    for name, array in tensors.items():
        a = np.ascontiguousarray(array)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        h.update(name.encode("utf-8") + b"\0")
        h.update(a.dtype.str.replace("=", "<").replace("|", "<").encode() + b"\0")
        h.update(repr(tuple(a.shape)).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()
