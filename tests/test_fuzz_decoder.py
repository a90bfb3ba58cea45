"""A seeded, structure-aware fuzz test of the decoder (issue 11): mutations of every stream of the
conformance suite that must decode, at the byte level (bit flips, byte runs, cuts, insertions,
deletions, flips in unit headers) and at the syntax level (header fields rewritten through the
syntax tables: tensor dimensions, scan orders, entry points, codebooks, QPs, ... up to values
beyond int64). Every decode runs under an element and topology budget and must end, quickly, in a
result or an NNRError that names the unit and the bit offset; jobs=2 must give what jobs=1 gives."""
import json
import os
import random
import time

import pytest

import nnr
from nnr.conformance.streams import assemble, units_of
from nnr.errors import NNRError
from nnr_core.syntax.units import split_units

SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")
MUTATIONS = 2000            # about 10 s on one core
PARITY_EVERY = 10           # every 10th mutation is also decoded with jobs=2
DECODE_SECONDS = 5.0        # no single decode may take longer (the valid streams take milliseconds)
BUDGET = {"max_total_elements": 1 << 24, "max_topology_bytes": 1 << 20}


def _entries():
    with open(os.path.join(SUITE, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    out = []
    for e in manifest["entries"]:
        if e["expect"] != "decode":
            continue
        steps = []
        for s in e["steps"]:
            with open(os.path.join(SUITE, s["file"]), "rb") as f:
                steps.append(f.read())
        out.append((e["id"], steps, e.get("decoder_options", {})))
    return out


def _big(rng, v):
    return rng.choice([0, 1, v + 1, 2 ** 31, 2 ** 40, 2 ** 66])


FIELDS = {       # header element -> a new value (from the old one); values beyond int64 included
    "tensor_dimensions": lambda rng, v: [x * rng.choice([1, 2, 1000, 1 << 20, 1 << 40]) + rng.choice([0, 1])
                                         for x in v],
    "scan_order": lambda rng, v: rng.randrange(5),
    "cabac_unary_length_minus1": lambda rng, v: rng.randrange(256),
    "dq_flag": lambda rng, v: 1 - v,
    "ep_arith_value": lambda rng, v: [rng.randrange(256) for _ in v],
    "ep_dq_state": lambda rng, v: [rng.randrange(8) for _ in v],
    "ep_bit_offset_delta": _big,
    "ep_bit_offset_delta_diff": lambda rng, v: [None] + [rng.choice([0, 5, -(x or 5), 2 ** 66, -(2 ** 66)])
                                                         for x in v[1:]],
    "put_node_depth": lambda rng, v: v + rng.choice([1, 2, 100]),
    "temporal_context_modeling_flag": lambda rng, v: 1 - v,
    "mps_qp_density": lambda rng, v: rng.randrange(8),
    "mps_quantization_parameter": lambda rng, v: rng.choice([-4096, 4095, 0, v + 1]),
    "compressed_parameter_types": lambda rng, v: rng.randrange(16),
    "decomposition_rank": _big,
    "g_number_of_rows": _big,
    "topology_elem_id_index": _big,
}


def _field_mutation(rng, data):
    """One header element rewritten, the units written again by the syntax tables."""
    try:
        units = units_of(data)
    except NNRError:
        return data
    candidates = [(u[1], k) for u in units for k in FIELDS if k in u[1]]
    candidates += [(u[1]["codebook"], "codebook_zero_value") for u in units
                   if isinstance(u[1].get("codebook"), dict)]
    if not candidates:
        return data
    fields, key = rng.choice(candidates)
    if key == "codebook_zero_value":
        for derived in ("Codebook", "CbZeroOffset"):
            fields.pop(derived, None)
        fields[key] = rng.choice([0, 2 ** 43, 2 ** 44, 2 ** 66, -(2 ** 66)])
    else:
        fields[key] = FIELDS[key](rng, fields[key])
        if key == "tensor_dimensions":
            fields["count_tensor_dimensions"] = len(fields[key])
    try:
        return assemble(units)
    except (NNRError, ValueError, TypeError):
        return data             # a value the writer cannot code: keep the stream as it was


def mutate(rng, data):
    d = bytearray(data)
    n = len(d)
    kind = rng.randrange(9)
    if kind == 0:
        for _ in range(rng.randint(1, 3)):
            b = rng.randrange(8 * n)
            d[b // 8] ^= 0x80 >> (b % 8)
    elif kind == 1:
        d[rng.randrange(n)] = rng.choice([0, 0xFF, rng.randrange(256)])
    elif kind == 2:
        d = d[:rng.randrange(n)]
    elif kind == 3:
        p = rng.randrange(n + 1)
        d[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    elif kind == 4:
        p = rng.randrange(n)
        del d[p:p + rng.randint(1, 4)]
    elif kind == 5:
        p = rng.randrange(n)
        d[p:p + rng.randint(1, 6)] = bytes(rng.randint(1, 6))
    elif kind == 6:
        try:
            spans = split_units(bytes(d))
        except NNRError:
            spans = []
        if spans:               # a flip in the first 40 bytes of a unit: its headers
            s = rng.choice(spans)
            b = rng.randrange(8 * s.offset, 8 * min(s.offset + s.size, s.offset + 40))
            d[b // 8] ^= 0x80 >> (b % 8)
    else:
        return _field_mutation(rng, bytes(d))
    return bytes(d)


def _decode(steps, k, data, options, jobs):
    """("ok", outputs) or ("raise", error) of decoding step k = data after steps[:k]."""
    dec = nnr.Decoder(jobs=jobs, **BUDGET, **options)
    for s in steps[:k]:
        dec.decode(s)
    try:
        out = dec.decode(data)
    except NNRError as err:
        return "raise", err
    return "ok", sorted((name, a.dtype.str, a.shape, a.tobytes()) for name, a in out.items())


@pytest.mark.parametrize("seed", [11])
def test_mutated_streams_give_located_nnr_errors_only(seed):
    rng = random.Random(seed)
    entries = _entries()
    problems, raised, slow = [], 0, []
    for i in range(MUTATIONS):
        entry_id, steps, options = entries[rng.randrange(len(entries))]
        k = rng.randrange(len(steps))
        data = mutate(rng, steps[k])
        where = f"mutation {i} of {entry_id} step {k} ({data.hex() if len(data) <= 256 else len(data)})"
        t = time.perf_counter()
        try:
            kind, result = _decode(steps, k, data, options, jobs=1)
        except Exception as exc:            # anything but an NNRError is a bug
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        elapsed = time.perf_counter() - t
        if elapsed > DECODE_SECONDS:
            slow.append(f"{where}: {elapsed:.1f} s")
        if kind == "raise":
            raised += 1
            if result.unit_index is None or result.bit_offset is None:
                problems.append(f"{where}: unlocated {type(result).__name__}: {result}")
        if i % PARITY_EVERY == 0:
            other = _decode(steps, k, data, options, jobs=2)
            got = (kind, (type(result), str(result)) if kind == "raise" else result)
            want = (other[0], (type(other[1]), str(other[1])) if other[0] == "raise" else other[1])
            if got != want:
                problems.append(f"{where}: jobs=1 {str(got)[:200]} but jobs=2 {str(want)[:200]}")
    assert not problems, "\n".join(problems[:20])
    assert not slow, "\n".join(slow[:20])
    assert raised > MUTATIONS // 2          # the mutations do reach the error paths
