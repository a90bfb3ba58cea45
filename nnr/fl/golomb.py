"""Golomb-Rice coding of sorted positions, as Sparse Binary Compression sends them (Sattler et al.,
IJCNN 2019, section III-C): the gaps between kept positions are geometric with parameter p (the
kept fraction), coded with the Rice parameter b* = 1 + floor(log2(log(phi - 1) / log(1 - p))),
phi the golden ratio. A gap d >= 1 is written as q = (d - 1) >> b ones, a zero, then the b low bits
of d - 1, most significant first. Vectorised: no Python loop runs per position."""
import math

import numpy as np

from nnr.errors import BitstreamError

PHI = (1.0 + math.sqrt(5.0)) / 2.0
MAX_RICE = 40


def rice_parameter(count, size) -> int:
    """b* for `count` positions among `size` (SBC's formula; 0 when nearly everything is kept)."""
    if count <= 0 or size <= 0:
        return 0
    p = count / size
    if p >= 1.0:
        return 0
    b = 1 + math.floor(math.log2(math.log(PHI - 1.0) / math.log(1.0 - p)))
    return int(min(max(b, 0), MAX_RICE))


def encode_positions(positions, b) -> bytes:
    """Strictly increasing non-negative positions -> the Rice-coded gaps, zero-padded to a byte."""
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0:
        return b""
    gaps = np.diff(pos, prepend=-1) - 1               # d - 1 >= 0
    if np.any(gaps < 0):
        raise ValueError("positions must be strictly increasing and >= 0")
    q = gaps >> b
    lengths = q + 1 + b
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(lengths.sum())
    bits = np.zeros(total + 1, np.int8)
    np.add.at(bits, starts, 1)                        # unary ones: +1 at the start, -1 after the q-th one
    np.add.at(bits, starts + q, -1)
    bits = np.cumsum(bits[:-1]).astype(np.uint8)
    for t in range(b):                                # remainder bits, MSB first, after the terminating zero
        bits[starts + q + 1 + t] = (gaps >> (b - 1 - t)) & 1
    return np.packbits(bits).tobytes()


def decode_positions(data, count, b, size):
    """(`count` positions, bytes their code takes) from Rice-coded gaps at the start of `data` (more
    may follow); each position must be < size. Raises BitstreamError when the data ends early or a
    position falls outside the tensor."""
    if count == 0:
        return np.zeros(0, np.int64), 0
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    n = bits.size
    # nz[j]: the first zero at or after bit j (n if none); a codeword starting at j ends at nz[j] + b
    zero_at = np.where(bits == 0, np.arange(n), n)
    nz = np.minimum.accumulate(zero_at[::-1])[::-1]
    nxt = np.append(np.minimum(nz + 1 + b, n + 1), [n + 1, n + 1])     # n + 1: past the end (absorbing)
    nz = np.append(nz, [n, n])
    # the codeword starts are the orbit of 0 under nxt: doubled each step (orbit, jump = nxt^len)
    orbit, jump = np.zeros(1, np.int64), nxt
    while orbit.size < count:
        orbit = np.concatenate((orbit, jump[orbit]))
        jump = jump[jump]
    starts = orbit[:count]
    ends = nz[starts]
    if np.any(ends + b >= n):
        raise BitstreamError(f"Golomb-coded positions: the data ends before position {count} "
                             f"({n} bits for {count} positions with b = {b})")
    q = ends - starts
    rem = np.zeros(count, np.int64)
    for t in range(b):
        rem = (rem << 1) | bits[ends + 1 + t]
    gaps = (q << b) + rem + 1
    pos = np.cumsum(gaps) - 1
    if pos[-1] >= size:
        raise BitstreamError(f"Golomb-coded positions: position {int(pos[-1])} is outside the tensor of "
                             f"{size} entries")
    return pos, (int(ends[-1]) + b + 8) // 8
