"""Truncated, bit-flipped and random bitstreams raise only NNRError subclasses, quickly."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnr
from nnr_core.syntax.units import split_units
from tests.vectors import SETS, load_cases

CASES = [c for s in SETS for c in load_cases(s)]
# (name, decoder primed with the earlier steps' state, bitstream) for every step of every vector
STREAMS = []
for _case in CASES:
    for _k, _step in enumerate(_case.steps):
        STREAMS.append((f"{_case.id}#{_k}", _case, _k))


def _primed_decoder(case, k):
    dec = nnr.Decoder()
    for step in case.steps[:k]:
        dec.decode(step.bitstream)
    return dec


def _unit_ends(data):
    return {s.offset + s.size for s in split_units(data)}


@pytest.mark.parametrize("name,case,k", STREAMS, ids=[s[0] for s in STREAMS])
def test_every_truncation_raises(name, case, k):
    data = case.steps[k].bitstream
    ends = _unit_ends(data)
    rng = np.random.default_rng(len(data))
    cuts = set(rng.integers(0, len(data), size=min(40, len(data))).tolist()) | {0, 1, len(data) - 1}
    for cut in sorted(cuts):
        dec = _primed_decoder(case, k)
        if cut in ends:
            try:
                dec.decode(data[:cut])
            except nnr.NNRError:
                pass
            continue
        with pytest.raises(nnr.NNRError):
            dec.decode(data[:cut])


@pytest.mark.parametrize("name,case,k", STREAMS, ids=[s[0] for s in STREAMS])
def test_bit_flips_raise_only_nnr_errors(name, case, k):
    data = bytearray(case.steps[k].bitstream)
    rng = np.random.default_rng(7 + len(data))
    for bit in rng.integers(0, 8 * len(data), size=min(60, 8 * len(data))).tolist():
        flipped = bytearray(data)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        dec = _primed_decoder(case, k)
        try:
            out = dec.decode(bytes(flipped))
        except nnr.NNRError:
            continue
        # a flip may give another valid stream; whatever decodes must be well-formed
        for a in out.values():
            assert isinstance(a, np.ndarray)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_raise_only_nnr_errors(data):
    try:
        nnr.decode(data)
    except nnr.NNRError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_random_payload_after_valid_headers(tail):
    """Valid STR/MPS/TPL and an NDU header followed by random payload bytes."""
    case = next(c for c in CASES if c.id == "nncodec-2.1.3/u_fc_qp-32_dq")
    data = case.steps[0].bitstream
    spans = split_units(data)
    ndu = spans[3]
    header_len = 14  # NDU header bytes incl. the size field (MANIFEST.md: hdr=14)
    body = data[ndu.offset + 2:ndu.offset + header_len] + tail
    size = 2 + len(body)
    stream = data[:ndu.offset] + bytes([size >> 8, size & 0xFF]) + body
    try:
        nnr.decode(stream)
    except nnr.NNRError:
        pass
