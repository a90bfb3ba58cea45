"""The worked examples of CABAC §14 against every available CABAC decoder
implementation (the Cython ``_decoder`` and the pure-Python ``pytwin``), plus robustness checks:
corrupted payloads and invalid ``TensorCoding`` values must raise only ``NNRError`` subclasses."""
import importlib
import time

import numpy as np
import pytest

from nnr.errors import (ConstraintViolationError, EntropyDecodingError, NNRError,
                        SyntaxValueError)
from nnr_core.cabac.params import TensorCoding
from nnr_core.cabac.pytwin_levels import ctx_param_set_flag, num_contexts

IMPLEMENTATIONS = ["nnr_core.cabac._decoder", "nnr_core.cabac.pytwin"]


@pytest.fixture(params=IMPLEMENTATIONS, ids=["cython", "pytwin"])
def impl(request):
    return importlib.import_module(request.param)      # the compiled engine must build: no skip


# --------------------------------------------------------------------------------------------
# CABAC §14.1 example A

PAYLOAD_A = bytes.fromhex("fc9000c051bd9fe0")
LEVELS_A = [0, 3, -1, 0, 0, 9, 2, 0]
N_A = 3
TENSOR_A = dict(rows=8, row_width=1, ndim=1, has_qp_offset=True, qp_density=2, dq_flag=0,
                cabac_unary_length_minus1=2, scan_order=0, general_profile_idc=1)

# (ctx or None for bypass, S before, S0 before, R before, V before, bin, R after, V after)
TABLE_A = [
    (0, 0, 0, 413, 0xC051, 0, 370, 0x9CA2),
    (0, -36, -2, 370, 0x9CA2, 1, 300, 0x5D44),
    (48, 0, 0, 300, 0x5D44, 0, 284, 0x1C88),
    (53, 0, 0, 284, 0x1C88, 1, 312, 0x3910),
    (55, 0, 0, 312, 0x3910, 1, 340, 0x7220),
    (57, 0, 0, 340, 0x7220, 0, 312, 0x2C40),
    (2, 0, 0, 312, 0x2C40, 1, 340, 0x5880),
    (50, 0, 0, 340, 0x5880, 1, 368, 0xB1BD),
    (54, 0, 0, 368, 0xB1BD, 0, 342, 0x9E7A),
    (1, 0, 0, 342, 0x9E7A, 0, 312, 0x82F4),
    (0, 1, 0, 312, 0x82F4, 0, 284, 0x5BE8),
    (0, -36, -2, 284, 0x5BE8, 1, 448, 0x17A0),
    (48, -36, -2, 448, 0x17A0, 0, 261, 0x17A0),
    (53, 36, 2, 261, 0x17A0, 1, 266, 0x2F40),
    (55, 36, 2, 266, 0x2F40, 1, 276, 0x5E80),
    (57, -36, -2, 276, 0x5E80, 1, 448, 0x333E),
    (65, 0, 0, 448, 0x333E, 1, 470, 0x667C),
    (66, 0, 0, 470, 0x667C, 1, 257, 0x667C),
    (67, 0, 0, 257, 0x667C, 0, 256, 0x4BF8),
    (None, None, None, 256, 0x4BF8, 1, 256, 0x17F0),
    (None, None, None, 256, 0x17F0, 0, 256, 0x2FE0),
    (2, 36, 2, 256, 0x2FE0, 1, 256, 0x5FC0),
    (50, 36, 2, 256, 0x5FC0, 0, 256, 0x3F80),
    (53, 72, 4, 256, 0x3F80, 1, 256, 0x7FE0),
    (55, 72, 4, 256, 0x7FE0, 0, 256, 0x7FC0),
    (2, 72, 4, 256, 0x7FC0, 0, 256, 0x7F80),
]

# Signalling list of example A (dq 0, N 3): 0..2, 48..50, 53..58, 65..95.
SIGNALLED_A = [0, 1, 2, 48, 49, 50] + list(range(53, 59)) + list(range(65, 96))


def _prelude_a(impl):
    """Init, qp_offset and the 43 zero param_set_flags of example A via the low-level API."""
    d = impl.CabacDecoder(PAYLOAD_A)
    st = d.state()
    assert (st["R"], st["V"], st["B"]) == (510, 0xFC90, -8)
    assert d.decode_bypass(8) == 0xFD                       # qp_offset -3
    st = d.state()
    assert (st["R"], st["V"]) == (510, 0x8D00)
    d.init_contexts(num_contexts(N_A))
    assert len(SIGNALLED_A) == 43
    assert ctx_param_set_flag(N_A) == 99                   # the example's context (87 + 4N)
    for c in SIGNALLED_A:
        assert d.decode_bin(ctx_param_set_flag(N_A)) == 0  # param_set_flag
        d.set_context_param_set(c, 0)
    st = d.state()
    assert (st["R"], st["V"], st["B"]) == (413, 0xC051, -8)
    return d


def test_example_a_payload(impl):
    (res,) = impl.decode_payload(PAYLOAD_A, [TensorCoding(**TENSOR_A)])
    assert res.qp_offset == -3
    assert res.levels.dtype == np.int32
    assert res.levels.tolist() == LEVELS_A
    assert res.entry_points == []
    assert res.row_skip_enabled_flag == 0 and res.hist_dep_sig_prob_enabled_flag == 0


def test_example_a_bin_by_bin(impl):
    d = _prelude_a(impl)
    for ctx, S, S0, r0, v0, value, r1, v1 in TABLE_A:
        st = d.state()
        assert (st["R"], st["V"]) == (r0, v0)
        if ctx is None:
            assert d.decode_bypass(1) == value
        else:
            row = d.contexts()[ctx]
            assert (int(row[0]), int(row[1]) + 16 * int(row[0])) == (S0, S)
            assert d.decode_bin(ctx) == value
        st = d.state()
        assert (st["R"], st["V"]) == (r1, v1)
    assert d.decode_terminate() == 1
    st = d.state()
    assert st["R"] == 254 and st["B"] == -6 and st["bytes_read"] == 8 and st["overread"] == 0
    assert st["P"] == 8 * 8 - 16 + 2


def test_example_a_contexts_layout(impl):
    d = impl.CabacDecoder(PAYLOAD_A)
    d.init_contexts(4)
    d.set_context_param_set(1, 1)
    d.set_context_param_set(2, 8)
    a = d.contexts()
    assert a.dtype == np.int32 and a.shape == (4, 5)
    assert a[0].tolist() == [0, 0, 5, 4, 0]
    assert a[1].tolist() == [-41, -654, 5, 4, 1]
    assert a[2].tolist() == [30, 482, 7, 5, 8]
    d.decode_bin(1)
    d.decode_bin(2)
    assert d.contexts()[1].tolist() != [-41, -654, 5, 4, 1]
    d.reset_contexts()
    assert d.contexts()[1:3].tolist() == [[-41, -654, 5, 4, 1], [30, 482, 7, 5, 8]]


def test_example_a_levels_low_level(impl):
    d = _prelude_a(impl)
    prev = 0
    got = []
    for _ in LEVELS_A:
        k = d.decode_level(0, prev, 0, 0, N_A)
        got.append(k)
        prev = k
    assert got == LEVELS_A
    st = d.state()
    assert (st["R"], st["V"]) == (256, 0x7F80)
    d.finish()


def test_example_a_finish_low_level(impl):
    d = impl.CabacDecoder(PAYLOAD_A)
    (res,) = [d.decode_tensor(TensorCoding(**TENSOR_A), 2)]
    assert res.levels.tolist() == LEVELS_A
    d.finish()
    assert d.state()["bytes_read"] == len(PAYLOAD_A)


# --------------------------------------------------------------------------------------------
# CABAC §14.2 example B (dependent quantization)

PAYLOAD_B = bytes.fromhex("8d001aa364f0")
TENSOR_B = dict(rows=6, row_width=1, ndim=1, has_qp_offset=False, qp_density=0, dq_flag=1,
                cabac_unary_length_minus1=2, scan_order=0, general_profile_idc=1)


def test_example_b_payload(impl):
    (res,) = impl.decode_payload(PAYLOAD_B, [TensorCoding(**TENSOR_B)])
    assert res.qp_offset is None
    assert res.levels.tolist() == [2, 0, -3, 1, 6, 0]


def test_example_b_low_level(impl):
    d = impl.CabacDecoder(PAYLOAD_B)
    N = 3
    d.init_contexts(num_contexts(N))
    signalled = list(range(24)) + [48, 49, 50] + list(range(53, 59)) + list(range(65, 96))
    assert len(signalled) == 64
    for c in signalled:
        assert d.decode_bin(ctx_param_set_flag(N)) == 0
        d.set_context_param_set(c, 0)
    nxt = [[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]]
    s, prev, ks, states = 0, 0, [], []
    for _ in range(6):
        states.append(s)
        k = d.decode_level(s, prev, 0, 0, N)
        ks.append(k)
        s = nxt[s][k & 1]
        prev = k
    assert ks == [1, 0, -2, 1, 3, 0]
    assert states == [0, 2, 1, 7, 6, 1]
    d.finish()


# --------------------------------------------------------------------------------------------
# CABAC §14.3 coefficient-coder vectors V1..V5 (12 x 20)

ROWS, COLS = 12, 20
_r, _c = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
LEVELS_V = np.where((_r % 4 != 3) & ((_r + 2 * _c) % 3 == 0),
                    ((7 * _r + 3 * _c) % 11) - 5, 0).astype(np.int32)
HISTORY_V5 = ((_r + _c) % 2 == 0).astype(np.uint8)
REFERENCE_V5 = np.where((_r * _c) % 4 == 0, ((_r + _c) % 5) - 2, 0).astype(np.int32)

PAYLOADS_V = {
    "V1": "468000bc2712e9dfc98a24e7fc28875e877acfb0b552bd37eec06e6169af4929b535b22b1c7bb0d2d8de"
          "878f393e07db7c69d86584",
    "V2": "d31c98000fa4e577ba8f6e08040b358e3ca98ed63d70b65f94a985bdd8466441fe8a30ebf5cdff1671"
          "1efa5169156468fd95b64d30",
    "V3": "d320852b6b4c340002f0eee9dba5dfc74fe093ffa49e0de179dcf93e5ae2494e84c26634873d0d06dc"
          "8b1e9a4810333f6f5dc0",
    "V4": "d09a41f2c002693881491c55fc386ae9d106e37e0ad62043faea23406b5fd4c72167299b6ab0390fa7"
          "f4abf9247d705b3ccf5e",
    "V5": "e910446363f94a905005cec5be990ba0624fc6b04700a0dff5a82843b45c1199b08942a776bf8ba71e"
          "905083e121487813cec588ebe0",
}
LENGTHS_V = {"V1": 53, "V2": 53, "V3": 51, "V4": 51, "V5": 54}


def tensor_v(case, **over):
    kw = dict(rows=ROWS, row_width=COLS, ndim=2, has_qp_offset=False, qp_density=0, dq_flag=0,
              cabac_unary_length_minus1=10, scan_order=0, general_profile_idc=1)
    kw.update({
        "V1": {},
        "V2": dict(scan_order=1),
        "V3": dict(scan_order=1),
        "V4": dict(cabac_unary_length_minus1=3, scan_order=2, general_profile_idc=0),
        "V5": dict(parent_node_id_present_flag=1, tca_reference=REFERENCE_V5,
                   hdsp_history=HISTORY_V5),
    }[case])
    kw.update(over)
    return TensorCoding(**kw)


def payload_v(case):
    p = bytes.fromhex(PAYLOADS_V[case])
    assert len(p) == LENGTHS_V[case]
    return p


@pytest.mark.parametrize("case", sorted(PAYLOADS_V))
def test_vectors_v(impl, case):
    (res,) = impl.decode_payload(payload_v(case), [tensor_v(case)], 2)
    assert res.qp_offset is None
    assert res.levels.dtype == np.int32
    np.testing.assert_array_equal(res.levels.reshape(ROWS, COLS), LEVELS_V)
    zero_rows = (LEVELS_V == 0).all(axis=1).astype(np.uint8)
    if case in ("V2", "V3", "V5"):
        assert res.row_skip_enabled_flag == 1
        np.testing.assert_array_equal(np.asarray(res.row_skip_list), zero_rows)
    else:
        assert res.row_skip_enabled_flag == 0
    assert res.hist_dep_sig_prob_enabled_flag == (1 if case == "V5" else 0)
    if case in ("V2", "V3"):                  # 8x8 blocks, 2 block rows -> one entry point
        assert len(res.entry_points) == 1
        delta, value, dq_state = res.entry_points[0]
        assert 0 < delta < 8 * len(payload_v(case)) and 0 <= value < 256 and dq_state == 0
    else:                                     # matrix scan, or V4's single 16x16 block row
        assert res.entry_points == []


def test_entry_points_agree_between_v2_decodes(impl):
    # The entry point is measured, so it must be reproducible and consistent with state().
    d = impl.CabacDecoder(payload_v("V2"))
    res = d.decode_tensor(tensor_v("V2"), 2)
    d.finish()
    (res2,) = impl.decode_payload(payload_v("V2"), [tensor_v("V2")])
    assert res.entry_points == res2.entry_points


def test_v4_needs_nncodec2_variant(impl):
    # V4 has one block row: NNCodec-1 would reset the range before the first level (CABAC §11), so
    # decoding it as variant 1 must not silently give the right levels with a clean end.
    try:
        (res,) = impl.decode_payload(payload_v("V4"), [tensor_v("V4")], 1)
    except NNRError:
        return
    assert not np.array_equal(res.levels.reshape(ROWS, COLS), LEVELS_V)


def test_v5_without_history_is_an_error(impl):
    with pytest.raises(ConstraintViolationError):
        impl.decode_payload(payload_v("V5"), [tensor_v("V5", hdsp_history=None)])


def test_two_tensors_back_to_back_need_both(impl):
    # One tensor description too many: the second tensor reads past the codeword.
    with pytest.raises(NNRError):
        impl.decode_payload(PAYLOAD_A, [TensorCoding(**TENSOR_A)] * 2)


# --------------------------------------------------------------------------------------------
# Corrupted payloads

def _all_cases():
    cases = [("A", PAYLOAD_A, [TensorCoding(**TENSOR_A)]),
             ("B", PAYLOAD_B, [TensorCoding(**TENSOR_B)])]
    for case in sorted(PAYLOADS_V):
        cases.append((case, payload_v(case), [tensor_v(case)]))
    return cases


@pytest.mark.parametrize("name,payload,tensors", _all_cases(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_truncations_raise(impl, name, payload, tensors):
    t0 = time.perf_counter()
    for n in range(len(payload)):
        with pytest.raises(NNRError):
            impl.decode_payload(payload[:n], tensors)
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("name,payload,tensors", _all_cases(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_bit_flips_raise_only_nnr_errors(impl, name, payload, tensors):
    t0 = time.perf_counter()
    errors = 0
    for bit in range(8 * len(payload)):
        bad = bytearray(payload)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            impl.decode_payload(bytes(bad), tensors)
        except NNRError:
            errors += 1
        # anything else propagates and fails the test
    assert errors > 0
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("name,payload,tensors", _all_cases(), ids=lambda x: x
                         if isinstance(x, str) else "")
@pytest.mark.parametrize("extra", [b"\x00", b"\x80", b"\xff"])
def test_trailing_byte_is_an_entropy_error(impl, name, payload, tensors, extra):
    with pytest.raises(EntropyDecodingError):
        impl.decode_payload(payload + extra, tensors)


@pytest.mark.parametrize("name,payload,tensors", _all_cases(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_bad_stop_bit_is_an_entropy_error(impl, name, payload, tensors):
    bad = bytearray(payload)
    bad[-1] ^= 0x01                   # either a 1 after the stop bit, or no stop bit at all
    with pytest.raises(EntropyDecodingError):
        impl.decode_payload(bytes(bad), tensors)


def test_bad_stop_bit_example_a(impl):
    for last in (0xE1, 0xC0, 0xF0):
        with pytest.raises(EntropyDecodingError) as info:
            impl.decode_payload(PAYLOAD_A[:-1] + bytes([last]), [TensorCoding(**TENSOR_A)])
        assert info.value.element == "stop bit"


def test_empty_and_random_payloads(impl):
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 3):
        with pytest.raises(NNRError):
            impl.decode_payload(b"\x00" * n, [TensorCoding(**TENSOR_A)])
    for _ in range(200):
        p = rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        for tensors in ([TensorCoding(**TENSOR_A)], [tensor_v("V5")], [tensor_v("V2")]):
            try:
                impl.decode_payload(p, tensors)
            except NNRError:
                pass


def test_truncated_large_tensor_bails_out_quickly(impl):
    # A 4M-element tensor whose payload ends right away: the over-read must stop the loop early.
    t = TensorCoding(rows=2048, row_width=2048, ndim=2, has_qp_offset=True, qp_density=2,
                     dq_flag=1, cabac_unary_length_minus1=10, scan_order=0,
                     general_profile_idc=1)
    t0 = time.perf_counter()
    with pytest.raises(EntropyDecodingError):
        impl.decode_payload(bytes.fromhex("7fffffff"), [t])
    assert time.perf_counter() - t0 < 5


# --------------------------------------------------------------------------------------------
# Invalid TensorCoding values: clean errors before decoding

INVALID = [
    ("scan_order 7 on 2-D", dict(scan_order=7)),
    ("scan_order 16", dict(scan_order=16)),
    ("tca_reference too short", dict(tca_reference=np.zeros(ROWS * COLS - 1, np.int32))),
    ("tca_reference wrong dtype", dict(tca_reference=np.zeros(ROWS * COLS, np.float64))),
    ("tca_reference not an array", dict(tca_reference=[0] * (ROWS * COLS))),
    ("hdsp_history too long", dict(hdsp_history=np.zeros(ROWS * COLS + 1, np.uint8))),
    ("unary length 256", dict(cabac_unary_length_minus1=256)),
    ("unary length -1", dict(cabac_unary_length_minus1=-1)),
    ("dq_flag 2", dict(dq_flag=2)),
    ("qp_density 8", dict(has_qp_offset=True, qp_density=8)),
    ("gpi 2", dict(general_profile_idc=2)),
    ("negative rows", dict(rows=-1)),
    ("cb_zero_offset outside codebook", dict(codebook_size=4, cb_zero_offset=4)),
    ("negative codebook size", dict(codebook_size=-3)),
]


@pytest.mark.parametrize("label,over", INVALID, ids=[x[0] for x in INVALID])
def test_invalid_tensor_coding(impl, label, over):
    with pytest.raises((SyntaxValueError, ConstraintViolationError)):
        impl.decode_payload(payload_v("V1"), [tensor_v("V1", **over)])


def test_scan_order_ignored_on_1d(impl):
    # scan_order only matters for 2-D-like tensors; example A decodes with any valid value.
    t = TensorCoding(**dict(TENSOR_A, scan_order=3))
    (res,) = impl.decode_payload(PAYLOAD_A, [t])
    assert res.levels.tolist() == LEVELS_A


# --------------------------------------------------------------------------------------------
# Package-level selection of the implementation (NNR_PURE_PYTHON)

@pytest.mark.parametrize("pure,expected", [("0", "nnr_core.cabac._decoder"),
                                           ("1", "nnr_core.cabac.pytwin")])
def test_package_picks_implementation(pure, expected):
    import os
    import subprocess
    import sys
    importlib.import_module(expected)
    code = ("import nnr_core.cabac as c; "
            "print(c.decode_payload.__module__, c.CabacDecoder.__module__, c.TensorCoding)")
    env = dict(os.environ, NNR_PURE_PYTHON=pure)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == expected and out[1] == expected
