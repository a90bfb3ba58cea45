"""Lockstep differential tests: the Cython DeepCABAC decoder against the pure-Python twin.

Both implement nnr_core/cabac/README.md. (a) drives two `CabacDecoder`s with the same random call
sequence and compares the return value, `state()` and `contexts()` after every call; (b) decodes
random and mutated payloads with random `TensorCoding`s and compares the `TensorResult`s, or the
exception class of the first failure. Every case is a seeded numpy generator: a failing id
reproduces exactly.
"""
import numpy as np
import pytest

from nnr.errors import NNRError
from nnr_core.cabac import _dec_levels
from nnr_core.cabac import _decoder as cy       # the compiled engine must build: no skip
from nnr_core.cabac import pytwin
from nnr_core.cabac.params import TensorCoding
from nnr_core.cabac.pytwin_levels import num_contexts

N_MAX = 12
NUM_CONTEXTS_MAX = num_contexts(N_MAX)


def outcome(fn, *args, **kwargs):
    """("ok", value) or ("raise", exception class) of one call."""
    try:
        return "ok", fn(*args, **kwargs)
    except NNRError as exc:
        return "raise", type(exc)


def same_state(py, cy_dec, where):
    assert cy_dec.state() == py.state(), f"state differs after {where}"
    c_py, c_cy = py.contexts(), np.asarray(cy_dec.contexts())
    assert c_cy.dtype == np.int32, f"contexts() dtype after {where}"
    if not np.array_equal(c_cy, c_py):
        rows = np.nonzero((c_cy != c_py).any(axis=1))[0] if c_cy.shape == c_py.shape else []
        raise AssertionError(f"contexts differ after {where}: rows {list(rows)[:8]}, "
                             f"twin {c_py[rows[:4]].tolist() if len(rows) else c_py.shape} "
                             f"cython {c_cy[rows[:4]].tolist() if len(rows) else c_cy.shape}")


# --- (a) random call sequences on the low-level API -----------------------------------------

def random_call(rng, n_alloc):
    """One random low-level call as (name, args, kwargs)."""
    op = rng.choice(["bin"] * 6 + ["level"] * 6 + ["bypass"] * 2 + ["param", "init", "range",
                                                                    "reset", "terminate"])
    if op == "bin":
        return "decode_bin", (int(rng.integers(n_alloc)),), {}
    if op == "bypass":
        return "decode_bypass", (int(rng.integers(1, 33)),), {}
    if op == "param":
        return "set_context_param_set", (int(rng.integers(n_alloc)), int(rng.integers(9))), {}
    if op == "init":
        return "init_contexts", (NUM_CONTEXTS_MAX,), {}
    if op == "range":
        return "reset_range", (), {}
    if op == "reset":
        return "reset_contexts", (), {}
    if op == "terminate":
        return "decode_terminate", (), {}
    kwargs = {}
    if rng.random() < 0.3:
        size = int(rng.integers(1, 12))
        kwargs = dict(codebook_size=size, cb_zero_offset=int(rng.integers(size)))
    b = int(rng.choice([0, 0, 0, -3, -2, -1, 1, 2, 3, 7]))
    args = (int(rng.integers(8)), int(rng.integers(-3, 4)), b, int(rng.random() < 0.25),
            int(rng.integers(1, N_MAX + 1)))
    return "decode_level", args, kwargs


@pytest.mark.parametrize("seed", range(300))
def test_lockstep_calls(seed):
    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, int(rng.integers(0, 48)), dtype=np.uint8).tobytes()
    if payload[:1] == b"\xff":
        # Offset 510/511 is no codeword; only decode_tensor and finish report it (test below).
        payload = b"\xfe" + payload[1:]
    ctx = f"seed {seed}, payload {payload.hex()}"
    o_py, o_cy = outcome(pytwin.CabacDecoder, payload), outcome(cy.CabacDecoder, payload)
    assert o_py[0] == o_cy[0], f"{ctx}: constructor twin {o_py} cython {o_cy}"
    if o_py[0] == "raise":
        assert o_py == o_cy, ctx
        return
    py, cyd = o_py[1], o_cy[1]
    same_state(py, cyd, f"{ctx}: constructor")
    for fn in (py, cyd):
        fn.init_contexts(NUM_CONTEXTS_MAX)
    same_state(py, cyd, f"{ctx}: init_contexts")
    for n in range(int(rng.integers(20, 120))):
        name, args, kwargs = random_call(rng, NUM_CONTEXTS_MAX)
        where = f"{ctx}: call {n} {name}{args}{kwargs or ''}"
        r_py = outcome(getattr(py, name), *args, **kwargs)
        r_cy = outcome(getattr(cyd, name), *args, **kwargs)
        assert r_cy == r_py, f"{where}: twin {r_py} cython {r_cy}"
        if r_py[0] == "raise":
            return                          # states after an error are unspecified
        same_state(py, cyd, where)
        if name == "decode_terminate" and r_py[1] == 1:
            return                          # the codeword has ended (V >= R·128 from here)


@pytest.mark.parametrize("payload", [b"\xff\x00", b"\xff\xff\x12\x34", b"\xff"])
def test_lockstep_bad_start(payload):
    t = TensorCoding(rows=3, row_width=1, ndim=1, has_qp_offset=True, qp_density=0, dq_flag=0,
                     cabac_unary_length_minus1=0, scan_order=0, general_profile_idc=1)
    for method, args in (("decode_tensor", (t, 2)), ("finish", ())):
        py, cyd = pytwin.CabacDecoder(payload), cy.CabacDecoder(payload)
        r_py, r_cy = outcome(getattr(py, method), *args), outcome(getattr(cyd, method), *args)
        assert r_py[0] == "raise", f"{method}: twin accepted offset 510/511"
        assert r_cy == r_py, f"{payload.hex()} {method}: twin {r_py} cython {r_cy}"


# --- (b) decode_tensor on random payloads ---------------------------------------------------

def random_coding(rng, variant):
    """A valid random TensorCoding (for `variant`) of at most a few hundred elements."""
    ndim = int(rng.integers(1, 5))
    rows = int(rng.choice([1, 2, 3, 5, 8, 9, 16, 17, 33, 40, 70]))
    row_width = 1 if ndim == 1 else int(rng.choice([1, 2, 3, 7, 8, 10, 16, 20, 33]))
    if ndim > 1 and rows * row_width > 700:
        rows = max(1, 700 // row_width)
    gpi = 0 if variant == 1 else int(rng.integers(2))
    t = TensorCoding(
        rows=rows, row_width=row_width, ndim=ndim, has_qp_offset=bool(rng.integers(2)),
        qp_density=int(rng.integers(8)), dq_flag=int(rng.integers(2)),
        cabac_unary_length_minus1=int(rng.integers(N_MAX)),
        scan_order=int(rng.integers(5)), general_profile_idc=gpi,
        parent_node_id_present_flag=int(rng.integers(2)))
    n = rows * row_width
    if gpi == 1 and rng.random() < 0.4:
        t.tca_reference = rng.choice([0, 0, 0, -2, -1, 1, 2, 5], n).astype(np.int32)
    if rng.random() < 0.6:
        t.hdsp_history = (rng.random(n) < 0.5).astype(np.uint8)
    if gpi == 1 and not t.dq_flag and rng.random() < 0.4:
        t.codebook_size = int(rng.choice([1, 2, 3, 4, 5, 9, 16, 40]))
        t.cb_zero_offset = int(rng.integers(t.codebook_size))
    return t


def describe(t):
    fields = {k: v for k, v in vars(t).items() if k not in ("tca_reference", "hdsp_history")}
    fields["tca"] = t.tca_reference is not None
    fields["hdsp"] = t.hdsp_history is not None
    return fields


def same_result(r_py, r_cy, where):
    assert r_cy.qp_offset == r_py.qp_offset, f"{where}: qp_offset"
    lv = np.asarray(r_cy.levels)
    assert lv.dtype == np.int32 and lv.shape == r_py.levels.shape, f"{where}: levels shape"
    if not np.array_equal(lv, r_py.levels):
        first = int(np.nonzero(lv != r_py.levels)[0][0])
        raise AssertionError(f"{where}: levels differ first at {first}: twin "
                             f"{r_py.levels[first]} cython {lv[first]}")
    assert r_cy.hist_dep_sig_prob_enabled_flag == r_py.hist_dep_sig_prob_enabled_flag, where
    assert r_cy.row_skip_enabled_flag == r_py.row_skip_enabled_flag, where
    if r_py.row_skip_list is None:
        assert r_cy.row_skip_list is None, f"{where}: row_skip_list"
    else:
        assert np.array_equal(np.asarray(r_cy.row_skip_list), r_py.row_skip_list), where
    eps_cy = [tuple(int(x) for x in ep) for ep in r_cy.entry_points]
    assert eps_cy == list(r_py.entry_points), f"{where}: entry points"


def run_payload(payload, tensors, variant, ctx):
    """decode_tensor for every tensor, then finish(), on both sides in lockstep."""
    o_py, o_cy = outcome(pytwin.CabacDecoder, payload), outcome(cy.CabacDecoder, payload)
    assert o_py[0] == o_cy[0], f"{ctx}: constructor twin {o_py} cython {o_cy}"
    if o_py[0] == "raise":
        assert o_py == o_cy, f"{ctx}: constructor"
        return "raise"
    py, cyd = o_py[1], o_cy[1]
    for i, t in enumerate(tensors):
        where = f"{ctx}: tensor {i} {describe(t)}"
        r_py = outcome(py.decode_tensor, t, variant)
        r_cy = outcome(cyd.decode_tensor, t, variant)
        assert r_py[0] == r_cy[0] and (r_py[0] == "ok" or r_py == r_cy), \
            f"{where}: twin {r_py} cython {r_cy}"
        if r_py[0] == "raise":
            return "raise"
        same_result(r_py[1], r_cy[1], where)
        same_state(py, cyd, where)
    r_py, r_cy = outcome(py.finish), outcome(cyd.finish)
    assert r_py == r_cy, f"{ctx}: finish twin {r_py} cython {r_cy}"
    return r_py[0]


@pytest.mark.parametrize("seed", range(300))
def test_lockstep_tensors(seed):
    rng = np.random.default_rng(10_000 + seed)
    variant = 1 if rng.random() < 0.25 else 2
    tensors = [random_coding(rng, variant) for _ in range(int(rng.choice([1, 1, 2, 3])))]
    payload = rng.integers(0, 256, int(rng.integers(2, 300)), dtype=np.uint8).tobytes()
    if rng.random() < 0.8:
        payload = bytes([payload[0] & 0x7F]) + payload[1:]
    run_payload(payload, tensors, variant, f"seed {seed}, variant {variant}, "
                                           f"payload {payload.hex()}")


# --- (b') the worked examples and bit-flipped versions of them ------------------------------

def _worked_examples():
    try:
        import test_cabac_twin as tw        # tests/ is on sys.path (pytest's prepend mode)
    except ImportError:
        from tests import test_cabac_twin as tw
    cases = [("A", tw.PAYLOAD_A, [tw.coding_a()], 2), ("B", tw.PAYLOAD_B, [tw.coding_b()], 2)]
    for name, hexpayload in sorted(tw.VECTORS.items()):
        cases.append((name, bytes.fromhex(hexpayload), [tw.coding_v(name)], 2))
    cases.append(("V4/variant1", bytes.fromhex(tw.VECTORS["V4"]), [tw.coding_v("V4")], 1))
    return cases


try:
    WORKED = _worked_examples()
except ImportError:                         # tests/ not importable as a package
    WORKED = []


@pytest.mark.parametrize("name, payload, tensors, variant", WORKED,
                         ids=[c[0] for c in WORKED])
def test_lockstep_worked_examples(name, payload, tensors, variant):
    result = run_payload(payload, tensors, variant, f"example {name}")
    assert result == ("raise" if variant == 1 else "ok")


@pytest.mark.parametrize("seed", range(120))
def test_lockstep_mutated_examples(seed):
    if not WORKED:
        pytest.skip("worked examples not importable")
    rng = np.random.default_rng(20_000 + seed)
    name, payload, tensors, variant = WORKED[seed % len(WORKED)]
    data = bytearray(payload)
    for _ in range(int(rng.integers(1, 4))):
        pos = int(rng.integers(len(data) * 8))
        data[pos // 8] ^= 0x80 >> (pos % 8)
    if rng.random() < 0.2:
        data = data[:int(rng.integers(1, len(data)))]
    run_payload(bytes(data), tensors, variant, f"example {name} mutated, seed {seed}, "
                                               f"payload {bytes(data).hex()}")


# --- (b'') the plain level loop (no TCA, HDSP or codebook) on long payloads ----------------

def test_derived_tables():
    assert _dec_levels._derived_tables_ok()


@pytest.mark.parametrize("seed", range(100))
def test_lockstep_plain_long(seed):
    """Payloads of a few kB through the plain level loop: its 64-bit window is refilled many
    times in the middle and byte by byte near the end; cut payloads over-read."""
    rng = np.random.default_rng(30_000 + seed)
    variant = 1 if seed % 5 == 0 else 2
    gpi = 0 if variant == 1 else int(rng.integers(2))
    rows, width = int(rng.choice([40, 64, 100])), int(rng.choice([33, 64, 100]))
    t = TensorCoding(rows=rows, row_width=width, ndim=2, has_qp_offset=True, qp_density=2,
                     dq_flag=int(rng.integers(2)), cabac_unary_length_minus1=int(rng.integers(12)),
                     scan_order=int(rng.choice([0, 0, 1, 2, 3, 4])), general_profile_idc=gpi,
                     parent_node_id_present_flag=0)
    # a skewed random codeword, cut near where the tensor's levels end
    bits = rng.random(80_000) < float(rng.choice([0.1, 0.3, 0.5]))
    payload = np.packbits(bits).tobytes()
    payload = bytes([payload[0] & 0x7F]) + payload[1:]
    probe = cy.CabacDecoder(payload)
    try:
        probe.decode_tensor(t, variant)
        used = probe.state()["bytes_read"]
    except NNRError:
        used = probe.state()["bytes_read"]
    payload = payload[:max(2, used - int(rng.integers(-2, 12)))]
    run_payload(payload, [t], variant, f"plain long, seed {seed}, {describe(t)}, "
                                       f"{len(payload)} bytes")


# --- invalid TensorCoding: both reject with the same class before decoding ------------------

def _invalid_codings():
    base = dict(rows=4, row_width=10, ndim=2, has_qp_offset=False, qp_density=0, dq_flag=0,
                cabac_unary_length_minus1=3, scan_order=1, general_profile_idc=1)
    changes = [
        ("scan_order 5", dict(scan_order=5), 2),
        ("unary length 256", dict(cabac_unary_length_minus1=256), 2),
        ("tca size", dict(tca_reference=np.zeros(39, np.int32)), 2),
        ("tca dtype", dict(tca_reference=np.zeros(40, np.int64)), 2),
        ("hdsp size", dict(hdsp_history=np.zeros(41, np.uint8)), 2),
        ("hdsp dtype", dict(hdsp_history=np.zeros(40, np.int32)), 2),
        ("codebook offset", dict(codebook_size=3, cb_zero_offset=3), 2),
        ("codebook with dq", dict(codebook_size=3, cb_zero_offset=1, dq_flag=1), 2),
        ("codebook with gpi 0", dict(codebook_size=3, cb_zero_offset=1, general_profile_idc=0),
         2),
        ("tca with gpi 0", dict(tca_reference=np.zeros(40, np.int32), general_profile_idc=0), 2),
        ("variant 1 with gpi 1", {}, 1),
    ]
    return [(name, TensorCoding(**{**base, **change}), variant)
            for name, change, variant in changes]


INVALID = _invalid_codings()


@pytest.mark.parametrize("name, t, variant", INVALID, ids=[c[0] for c in INVALID])
def test_lockstep_invalid_coding(name, t, variant):
    payload = bytes(range(64))
    py, cyd = pytwin.CabacDecoder(payload), cy.CabacDecoder(payload)
    r_py, r_cy = outcome(py.decode_tensor, t, variant), outcome(cyd.decode_tensor, t, variant)
    assert r_py[0] == "raise", f"{name}: twin accepted it"
    assert r_cy == r_py, f"{name}: twin {r_py} cython {r_cy}"
    same_state(py, cyd, name)
