"""Bit estimates of a regular bin from its context state (CABAC §4.6).

NNCodec's encoder prices a regular bin with a 1024-entry table of scaled bit counts (1 bit =
32768), indexed by ``x = S >> 3`` (−512 … 511) of the context's combined state S.  The table is
built here from the closed formula of CABAC §4.6 (which reproduces all 1024 entries of NNCodec's
table) and is shared by the parameter-set optimisation of the entropy encoder (CABAC §6.5) and the
rate terms of the quantizers (CABAC §8.3, CABAC §9.3).

Use ``BIT_COST[512 + (S >> 3), bin]`` (numpy, uint32) or ``bin_cost(S, bin)``.
"""
import math

import numpy as np

SCALE = 32768
"""One bit in the scaled unit of the estimates."""

BYPASS_COST = SCALE
"""A bypass bin costs exactly one bit."""

OFFSET = 512
"""Index of x = 0 in the table (x = S >> 3 runs from −512 to 511)."""


def _entry(x):
    """(cost of bin 0, cost of bin 1) for x = S >> 3 (CABAC §4.6)."""
    m = min(abs(x), 511)
    lps_bits = 32968.4 + 400.79895 * m                 # double precision, as in CABAC §4.6
    cost_lps = round(lps_bits)
    cost_mps = round(-math.log2(1.0 - 2.0 ** (-lps_bits / SCALE)) * SCALE)
    if x >= 0:                                          # MPS = 1
        return cost_lps, cost_mps
    return cost_mps, cost_lps


def _build():
    table = np.empty((1024, 2), dtype=np.uint32)
    for x in range(-OFFSET, OFFSET):
        table[x + OFFSET] = _entry(x)
    table.setflags(write=False)
    return table


BIT_COST = _build()
"""uint32[1024, 2]: BIT_COST[512 + (S >> 3), bin] = scaled bits of coding `bin` in state S."""

_COST_LIST = tuple((int(a), int(b)) for a, b in BIT_COST)


def bin_cost(S, bin_val):
    """Scaled bits (1 bit = 32768) of coding bin `bin_val` with a context of combined state S."""
    return _COST_LIST[OFFSET + (S >> 3)][1 if bin_val else 0]


__all__ = ["BIT_COST", "BYPASS_COST", "OFFSET", "SCALE", "bin_cost"]
