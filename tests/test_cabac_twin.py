"""The pure-Python DeepCABAC twin against the worked examples of CABAC §14."""
import os

import numpy as np
import pytest

from nnr.errors import ConstraintViolationError, EntropyDecodingError, SyntaxValueError
from nnr_core.cabac import pytwin
from nnr_core.cabac.params import TensorCoding

HLS_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams",
                            "hls-examples")

# --- CABAC §14.1 example A ------------------------------------------------------------------

PAYLOAD_A = bytes.fromhex("fc9000c051bd9fe0")
LEVELS_A = [0, 3, -1, 0, 0, 9, 2, 0]

# The bin table of CABAC §14.1 step 4: (ctx or None for bypass, S, S0, R, V, rLPS, bin, R', V').
BINS_A = [
    (0, 0, 0, 413, 0xC051, 185, 0, 370, 0x9CA2),
    (0, -36, -2, 370, 0x9CA2, 150, 1, 300, 0x5D44),
    (48, 0, 0, 300, 0x5D44, 142, 0, 284, 0x1C88),
    (53, 0, 0, 284, 0x1C88, 128, 1, 312, 0x3910),
    (55, 0, 0, 312, 0x3910, 142, 1, 340, 0x7220),
    (57, 0, 0, 340, 0x7220, 156, 0, 312, 0x2C40),
    (2, 0, 0, 312, 0x2C40, 142, 1, 340, 0x5880),
    (50, 0, 0, 340, 0x5880, 156, 1, 368, 0xB1BD),
    (54, 0, 0, 368, 0xB1BD, 171, 0, 342, 0x9E7A),
    (1, 0, 0, 342, 0x9E7A, 156, 0, 312, 0x82F4),
    (0, 1, 0, 312, 0x82F4, 142, 0, 284, 0x5BE8),
    (0, -36, -2, 284, 0x5BE8, 112, 1, 448, 0x17A0),
    (48, -36, -2, 448, 0x17A0, 187, 0, 261, 0x17A0),
    (53, 36, 2, 261, 0x17A0, 128, 1, 266, 0x2F40),
    (55, 36, 2, 266, 0x2F40, 128, 1, 276, 0x5E80),
    (57, -36, -2, 276, 0x5E80, 112, 1, 448, 0x333E),
    (65, 0, 0, 448, 0x333E, 213, 1, 470, 0x667C),
    (66, 0, 0, 470, 0x667C, 213, 1, 257, 0x667C),
    (67, 0, 0, 257, 0x667C, 128, 0, 256, 0x4BF8),
    (None, None, None, 256, 0x4BF8, None, 1, 256, 0x17F0),
    (None, None, None, 256, 0x17F0, None, 0, 256, 0x2FE0),
    (2, 36, 2, 256, 0x2FE0, 128, 1, 256, 0x5FC0),
    (50, 36, 2, 256, 0x5FC0, 128, 0, 256, 0x3F80),
    (53, 72, 4, 256, 0x3F80, 128, 1, 256, 0x7FE0),
    (55, 72, 4, 256, 0x7FE0, 128, 0, 256, 0x7FC0),
    (2, 72, 4, 256, 0x7FC0, 128, 0, 256, 0x7F80),
]


def coding_a():
    return TensorCoding(rows=8, row_width=1, ndim=1, has_qp_offset=True, qp_density=2,
                        dq_flag=0, cabac_unary_length_minus1=2, scan_order=0,
                        general_profile_idc=1)


def test_example_a_tensor():
    (res,) = pytwin.decode_payload(PAYLOAD_A, [coding_a()])
    assert res.qp_offset == -3
    assert res.levels.dtype == np.int32
    assert res.levels.tolist() == LEVELS_A
    assert (res.hist_dep_sig_prob_enabled_flag, res.row_skip_enabled_flag) == (0, 0)
    assert res.row_skip_list is None and res.entry_points == []


def test_example_a_bin_by_bin():
    d = pytwin.CabacDecoder(PAYLOAD_A)
    assert (d.R, d.V, d.B) == (510, 0xFC90, -8)
    assert d.decode_bypass(8) == 0xFD                       # qp_offset -3
    assert (d.R, d.V) == (510, 0x8D00)
    d.init_contexts(102)                                    # 90 + 4N, N = 3
    assert d.contexts().shape == (102, 5) and d.contexts().dtype == np.int32
    for ctx in [0, 1, 2, 48, 49, 50, *range(53, 59), *range(65, 96)]:
        assert d.decode_bin(99) == 0                        # param_set_flag, 87 + 4N
        d.set_context_param_set(ctx, 0)
    assert (d.R, d.V, d.B) == (413, 0xC051, -8)
    for n, (ctx, S, S0, R, V, r_lps, bin_val, R2, V2) in enumerate(BINS_A, 1):
        assert (d.R, d.V) == (R, V), f"bin {n}"
        if ctx is None:
            assert d.decode_bypass(1) == bin_val, f"bin {n}"
        else:
            s0, s1 = d.contexts()[ctx, :2]
            assert (s1 + 16 * s0, s0) == (S, S0), f"bin {n}"
            assert pytwin.RLPS_TABLE[(R >> 5) & 7][abs(S >> 7)] == r_lps, f"bin {n}"
            assert d.decode_bin(ctx) == bin_val, f"bin {n}"
        assert (d.R, d.V) == (R2, V2), f"bin {n}"
    d.finish()                                              # terminating bin 1, stop bit
    st = d.state()
    assert (st["R"], st["B"], st["bytes_read"], st["overread"]) == (254, -6, 8, 0)
    assert st["P"] == 8 * 8 - 16 + 2


def test_example_a_levels_low_level():
    d = pytwin.CabacDecoder(PAYLOAD_A)
    d.decode_bypass(8)
    d.init_contexts(102)
    for _ in range(43):
        assert d.decode_bin(99) == 0
    neighbour = 0
    for want in LEVELS_A:
        k = d.decode_level(0, neighbour, 0, 0, 3)
        assert k == want
        neighbour = k
    d.finish()


def test_context_update_reading_aid():
    d = pytwin.CabacDecoder(PAYLOAD_A)
    d.init_contexts(1)
    d.decode_bin(0)                                         # value 0 (table row 1)
    assert d.contexts()[0].tolist() == [-2, -4, 5, 4, 0]


# --- CABAC §14.2 example B ------------------------------------------------------------------

PAYLOAD_B = bytes.fromhex("8d001aa364f0")


def coding_b():
    return TensorCoding(rows=6, row_width=1, ndim=1, has_qp_offset=False, qp_density=0,
                        dq_flag=1, cabac_unary_length_minus1=2, scan_order=0,
                        general_profile_idc=1)


def test_example_b_tensor():
    (res,) = pytwin.decode_payload(PAYLOAD_B, [coding_b()])
    assert res.qp_offset is None
    assert res.levels.tolist() == [2, 0, -3, 1, 6, 0]


def test_example_b_levels_and_states():
    d = pytwin.CabacDecoder(PAYLOAD_B)
    d.init_contexts(102)
    for _ in range(24 + 3 + 6 + 31):
        assert d.decode_bin(99) == 0
    rows = [(0, 1, 2), (2, 0, 1), (1, -2, 7), (7, 1, 6), (6, 3, 1), (1, 0, 7)]
    s = neighbour = 0
    for state, k_want, next_state in rows:
        assert s == state
        k = d.decode_level(s, neighbour, 0, 0, 3)
        assert k == k_want
        s = pytwin.pytwin_levels.NEXT[s][k & 1]
        assert s == next_state
        neighbour = k
    d.finish()


# --- CABAC §14.3 coefficient-coder vectors V1–V5 --------------------------------------------

ROWS, WIDTH = 12, 20
R_IDX, C_IDX = np.meshgrid(np.arange(ROWS), np.arange(WIDTH), indexing="ij")
LEVELS_V = np.where((R_IDX % 4 != 3) & ((R_IDX + 2 * C_IDX) % 3 == 0),
                    (7 * R_IDX + 3 * C_IDX) % 11 - 5, 0).astype(np.int32).reshape(-1)
HISTORY_V5 = ((R_IDX + C_IDX) % 2 == 0).astype(np.uint8).reshape(-1)
REFERENCE_V5 = np.where((R_IDX * C_IDX) % 4 == 0, (R_IDX + C_IDX) % 5 - 2,
                        0).astype(np.int32).reshape(-1)
SKIPPED_ROWS = [0, 0, 0, 1] * 3

VECTORS = {
    "V1": "468000bc2712e9dfc98a24e7fc28875e877acfb0b552bd37eec06e6169af4929b535b22b1c7bb0d2d8"
          "de878f393e07db7c69d86584",
    "V2": "d31c98000fa4e577ba8f6e08040b358e3ca98ed63d70b65f94a985bdd8466441fe8a30ebf5cdff1671"
          "1efa5169156468fd95b64d30",
    "V3": "d320852b6b4c340002f0eee9dba5dfc74fe093ffa49e0de179dcf93e5ae2494e84c26634873d0d06dc"
          "8b1e9a4810333f6f5dc0",
    "V4": "d09a41f2c002693881491c55fc386ae9d106e37e0ad62043faea23406b5fd4c72167299b6ab0390fa7"
          "f4abf9247d705b3ccf5e",
    "V5": "e910446363f94a905005cec5be990ba0624fc6b04700a0dff5a82843b45c1199b08942a776bf8ba71e"
          "905083e121487813cec588ebe0",
}


def coding_v(name):
    args = dict(rows=ROWS, row_width=WIDTH, ndim=2, has_qp_offset=False, qp_density=0,
                dq_flag=0, cabac_unary_length_minus1=10, scan_order=0, general_profile_idc=1)
    if name in ("V2", "V3"):
        args.update(scan_order=1)
    elif name == "V4":
        args.update(cabac_unary_length_minus1=3, scan_order=2, general_profile_idc=0)
    elif name == "V5":
        args.update(parent_node_id_present_flag=1, hdsp_history=HISTORY_V5.copy(),
                    tca_reference=REFERENCE_V5.copy())
    return TensorCoding(**args)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_coefficient_vectors(name):
    payload = bytes.fromhex(VECTORS[name])
    (res,) = pytwin.decode_payload(payload, [coding_v(name)])
    np.testing.assert_array_equal(res.levels, LEVELS_V)
    row_skip = name in ("V2", "V3", "V5")
    assert res.row_skip_enabled_flag == int(row_skip)
    if row_skip:
        assert res.row_skip_list.tolist() == SKIPPED_ROWS
    assert res.hist_dep_sig_prob_enabled_flag == int(name == "V5")
    # V2/V3: two 8-row block rows -> one entry point; V4: one 16-row block row -> none.
    assert len(res.entry_points) == (1 if name in ("V2", "V3") else 0)


def test_v4_is_not_an_nncodec1_payload():
    # CABAC §11: the NNCodec-1 list signals one more remainder context and resets the range for a
    # single block row, so the NNCodec-2 payload V4 does not decode to its levels as variant 1.
    try:
        (res,) = pytwin.decode_payload(bytes.fromhex(VECTORS["V4"]), [coding_v("V4")], variant=1)
    except EntropyDecodingError:
        return
    assert not np.array_equal(res.levels, LEVELS_V)


def test_v5_without_history_is_an_error():
    t = coding_v("V5")
    t.hdsp_history = None
    with pytest.raises(ConstraintViolationError):
        pytwin.decode_payload(bytes.fromhex(VECTORS["V5"]), [t])


# --- entry points (HLS §16.3) ----------------------------------------------------------------

def test_entry_points_hls_16_3():
    with open(f"{HLS_EXAMPLES}/16.3_scan1_entrypoints.nnc", "rb") as f:
        payload = f.read()[0x25:]
    t = TensorCoding(rows=20, row_width=10, ndim=2, has_qp_offset=True, qp_density=2, dq_flag=1,
                     cabac_unary_length_minus1=10, scan_order=1, general_profile_idc=1)
    (res,) = pytwin.decode_payload(payload, [t])
    assert res.qp_offset == -38
    assert res.entry_points == [(531, 57, 2), (530, 50, 0)]


# --- end of payload and invalid input (CABAC §3.5, README) ----------------------------------

@pytest.mark.parametrize("payload, element", [
    (PAYLOAD_A[:-1], "payload length"),                     # truncated: zero bytes fed
    (PAYLOAD_A + b"\x00", "payload length"),                # trailing byte
    (PAYLOAD_A[:-1] + b"\xf0", "stop bit"),                 # padding not 1 0 0 0 0 0
])
def test_end_of_payload_errors(payload, element):
    with pytest.raises(EntropyDecodingError) as exc:
        pytwin.decode_payload(payload, [coding_a()])
    assert exc.value.element == element
    assert exc.value.bit_offset is not None


def test_truncated_payload_never_reads_past_the_end():
    d = pytwin.CabacDecoder(b"\x12")
    assert d.state()["overread"] == 1 and d.state()["bytes_read"] == 2
    with pytest.raises(EntropyDecodingError):
        d.finish()


def test_offset_510_is_an_error():
    d = pytwin.CabacDecoder(b"\xff\x00\x00")               # reported when decoding starts
    with pytest.raises(EntropyDecodingError) as exc:
        d.decode_tensor(coding_a())
    assert exc.value.element == "arithmetic codeword"
    with pytest.raises(EntropyDecodingError):
        pytwin.CabacDecoder(b"\xff\x00\x00").finish()


def test_range_reset_above_the_value_is_an_error():
    d = pytwin.CabacDecoder(b"\x90\x00")                    # V = 0x9000 >= 256·128
    with pytest.raises(EntropyDecodingError) as exc:
        d.reset_range()
    assert exc.value.element == "arithmetic codeword"


@pytest.mark.parametrize("change, error", [
    (dict(scan_order=5), SyntaxValueError),
    (dict(cabac_unary_length_minus1=256), SyntaxValueError),
    (dict(tca_reference=np.zeros(ROWS * WIDTH - 1, np.int32)), ConstraintViolationError),
    (dict(tca_reference=np.zeros(ROWS * WIDTH, np.int64)), ConstraintViolationError),
    (dict(hdsp_history=np.zeros(ROWS * WIDTH, np.int32)), ConstraintViolationError),
    (dict(codebook_size=4, cb_zero_offset=4), SyntaxValueError),
    (dict(codebook_size=4, cb_zero_offset=1, dq_flag=1), ConstraintViolationError),
])
def test_invalid_tensor_coding(change, error):
    t = coding_v("V1")
    for key, value in change.items():
        setattr(t, key, value)
    d = pytwin.CabacDecoder(bytes.fromhex(VECTORS["V1"]))
    before = d.state()
    with pytest.raises(error):
        d.decode_tensor(t)
    assert d.state() == before                              # rejected before any bin


def test_codebook_size_one_reads_no_bins():
    t = TensorCoding(rows=3, row_width=4, ndim=2, has_qp_offset=False, qp_density=0, dq_flag=0,
                     cabac_unary_length_minus1=3, scan_order=0, general_profile_idc=1,
                     codebook_size=1, cb_zero_offset=0)
    d = pytwin.CabacDecoder(b"\x80\x00")
    res = d.decode_tensor(t)
    assert d.state()["P"] == 0 and not res.levels.any()
