"""The table-driven syntax layer: annotated streams (HLS §16), the NNCodec reference
vectors, header re-writing and error behaviour (write -> read -> write properties:
test_syntax_roundtrip.py)."""
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as hs

from nnr.errors import (ConstraintViolationError, NNRError, SyntaxValueError,
                        TruncatedBitstreamError, UnitSizeMismatchError, UnsupportedFeatureError)
from nnr_core.bitstream.trace import Trace
from nnr_core.syntax import lang
from nnr_core.syntax.units import (SyntaxState, UnitSpan, parse_unit, split_units,
                                   write_unit)

ROOT = Path(__file__).resolve().parents[1]
HLS = ROOT / "bitstreams" / "hls-examples"
REF_DIRS = [ROOT / "bitstreams" / "nncodec-2.1.3", ROOT / "bitstreams" / "nncodec-1.x"]


def parse_all(data, state=None, trace=None):
    state = state or SyntaxState()
    return [parse_unit(data, s, state, trace) for s in split_units(data)]


def hls(name):
    path = HLS / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    return path.read_bytes()


def rewrite_all(data, units):
    """Re-write every unit from its parsed fields (+ the NDU payload bytes)."""
    state = SyntaxState()
    out = b""
    for u in units:
        payload = data[u.payload_offset:u.payload_end] if u.nnr_unit_type == 5 else b""
        out += write_unit(u.nnr_unit_type, u.fields, state, payload)
    return out


def test_tables_load_and_cache():
    t = lang.load_tables()
    assert t is lang.load_tables()
    for name in ("nnr_unit", "nnr_unit_size", "nnr_unit_header", "nnr_start_unit_header",
                 "nnr_model_parameter_set_payload", "sparsification_performance_map",
                 "pruning_performance_map", "unification_performance_map",
                 "decomposition_performance_map", "nnr_layer_parameter_set_unit_header",
                 "nnr_layer_parameter_set_payload", "nnr_topology_unit_header",
                 "nnr_topology_unit_payload", "nnr_quantization_unit_header",
                 "nnr_quantization_unit_payload", "nnr_compressed_data_unit_header",
                 "topology_elements_ids_list", "codebook", "tensor_dimensions_list",
                 "cabac_entry_point_list"):
        assert name in t.structs
    assert t.constants["NNR_PT_BLOCK"] == 3


def test_language_errors():
    with pytest.raises(lang.SyntaxFileError):
        lang.parse_syntax("s:\n    x  u(\n")
    with pytest.raises(lang.SyntaxFileError):
        lang.parse_syntax("s:\n    check x -> NoSuchError \"m\"\n")
    with pytest.raises(lang.SyntaxFileError):
        lang.parse_syntax("    x u(1)\n")


# -- HLS §16 annotated streams --------------------------------------------------------------
COMMON = dict(nnr_unit_size_flag=0, independently_decodable_flag=1,
              partial_data_counter_present_flag=0)
MPS_P1 = dict(topology_carriage_flag=1, mps_sparsification_flag=0, mps_pruning_flag=0,
              mps_unification_flag=0, mps_decomposition_performance_map_flag=0,
              mps_quantization_method_flags=1, mps_topology_indexed_reference_flag=0,
              base_model_id_present_flag=0, validation_set_performance_present_flag=0,
              metric_type_performance_map_valid_flag=0, mps_parent_signalling_enabled_flag=0,
              nnr_reserved_zero_1bit=0, nnr_reserved_zero_2bits=0, mps_qp_density=2,
              mps_quantization_parameter=0)
TPL0 = dict(topology_storage_format=0, topology_compression_format=0, topology_data="")
W_DIMS = dict(tensor_dimensions_flag=1, cabac_unary_length_flag=1, compressed_parameter_types=0,
              count_tensor_dimensions=2, tensor_dimensions=[4, 3], cabac_unary_length_minus1=10,
              first_tensor_dimension_shift=0, scan_order=0)
NODE0 = dict(node_id_present_flag=1, device_id=0, parameter_id=0, put_node_depth=0)


def check(fields, **expected):
    for k, v in expected.items():
        assert fields.get(k, "<absent>") == v, (k, fields.get(k, "<absent>"), v)


def test_16_1_profile1():
    data = hls("16.1_profile1_fc.nnc")
    assert len(data) == 111
    u = parse_all(data)
    assert [(x.offset, x.size, x.nnr_unit_type) for x in u] == [
        (0, 4, 0), (4, 8, 1), (12, 6, 3), (18, 54, 5), (72, 39, 5)]
    check(u[0].fields, nnr_unit_size=4, nnr_unit_type=0, general_profile_idc=1, **COMMON)
    check(u[1].fields, nnr_unit_size=8, nnr_unit_type=1, **MPS_P1, **COMMON)
    check(u[2].fields, nnr_unit_size=6, nnr_unit_type=3, **TPL0, **COMMON)
    w = u[3]
    check(w.fields, nnr_unit_size=54, nnr_compressed_data_unit_payload_type=1,
          nnr_multiple_topology_elements_present_flag=0,
          nnr_decompressed_data_format_present_flag=0, input_parameters_present_flag=1,
          topology_elem_id="fc.weight", codebook_present_flag=0, dq_flag=1, **NODE0, **W_DIMS)
    assert "parent_node_id_type" not in w.fields
    assert (w.payload_offset, w.payload_end) == (0x28, 0x48)
    b = u[4]
    check(b.fields, nnr_unit_size=39, topology_elem_id="fc.bias", node_id_present_flag=1,
          device_id=0, parameter_id=1, put_node_depth=0, codebook_present_flag=0, dq_flag=1,
          tensor_dimensions_flag=1, cabac_unary_length_flag=1, compressed_parameter_types=0,
          count_tensor_dimensions=1, tensor_dimensions=[4], cabac_unary_length_minus1=10,
          first_tensor_dimension_shift=0, scan_order=0)   # the last two inferred (HLS §11)
    assert (b.payload_offset, b.payload_end) == (0x5a, 0x6f)
    assert data[b.payload_offset:b.payload_offset + 3] == bytes.fromhex("b4d800")


def test_16_2_profile0():
    data = hls("16.2_profile0_fc.nnc")
    assert len(data) == 107
    u = parse_all(data)
    check(u[0].fields, general_profile_idc=0)
    check(u[1].fields, nnr_reserved_zero_7bits=0, mps_qp_density=2, mps_quantization_parameter=0,
          mps_parent_signalling_enabled_flag=0)          # inferred for profile 0
    assert "base_model_id_present_flag" in u[1].fields  # inferred 0
    assert "nnr_reserved_zero_2bits" not in u[1].fields
    w = u[3].fields
    check(w, topology_elem_id="fc.weight", codebook_present_flag=0, dq_flag=1, **W_DIMS)
    check(w, node_id_present_flag=0, parent_node_id_present_flag=0)  # inferred
    assert "device_id" not in w
    assert u[3].payload_offset == 0x26 and data[0x26:0x28] == bytes.fromhex("d9b3")
    assert u[4].fields["topology_elem_id"] == "fc.bias"


def test_16_3_entry_points():
    data = hls("16.3_scan1_entrypoints.nnc")
    t = Trace()
    u = parse_all(data, trace=t)[3]
    check(u.fields, nnr_unit_size=213, topology_elem_id="w", dq_flag=1, count_tensor_dimensions=2,
          tensor_dimensions=[20, 10], cabac_unary_length_minus1=10, first_tensor_dimension_shift=0,
          scan_order=1, NumEntryPoints=2, ep_arith_value=[57, 50], ep_dq_state=[2, 0],
          ep_bit_offset_delta=531, BitOffsetDelta=[531, 530], Rows=20, RowWidth=10,
          NumElements=200)
    assert u.fields["ep_bit_offset_delta_diff"][1] == -1
    assert u.payload_offset == 0x25 and data[0x25:0x28] == bytes.fromhex("d9915c")
    # NNCodec's packed form (HLS §16.3)
    packed = [b * 2048 + v * 8 + d for v, d, b in zip(u.fields["ep_arith_value"],
                                                       u.fields["ep_dq_state"],
                                                       u.fields["BitOffsetDelta"])]
    assert packed == [1087946, 1085840]
    rec = {r.path.rsplit(".", 1)[-1]: r for r in t.records if r.bit_pos >= 0x12 * 8}
    assert rec["ep_arith_value[0]"].bit_pos == 0x1f * 8
    assert rec["ep_bit_offset_delta"].bit_pos == 0x20 * 8 + 3
    assert rec["ep_bit_offset_delta_diff[1]"].bit_pos == 0x23 * 8 + 2


def test_16_4_block():
    u = parse_all(hls("16.4_block_weight_bias.nnc"))[3]
    check(u.fields, nnr_unit_size=83, nnr_compressed_data_unit_payload_type=3,
          nnr_multiple_topology_elements_present_flag=1, input_parameters_present_flag=1,
          count_topology_elements_minus2=0, topology_elem_id_list=["fc.weight", "fc.bias"],
          codebook_present_flag=0, dq_flag=1, compressed_parameter_types=8,
          count_tensor_dimensions=2, tensor_dimensions=[4, 3], cabac_unary_length_minus1=10,
          first_tensor_dimension_shift=0, scan_order=0, **NODE0)
    assert u.payload_offset == 0x32 and u.payload_end - u.payload_offset == 51


def test_16_5_incremental():
    for name, depth, tca, size in (("16.5_incremental_round1.nnc", 1, 0, None),
                                   ("16.5_incremental_round2_tca.nnc", 2, 1, 56)):
        data = hls(name)
        if size:
            assert len(data) == size
        u = parse_all(data)
        assert u[1].fields["mps_parent_signalling_enabled_flag"] == 1
        assert u[1].fields["nnr_pre_flag"] == 0
        check(u[3].fields, topology_elem_id="fc.weight", node_id_present_flag=1, device_id=0,
              parameter_id=0, put_node_depth=depth, parent_node_id_present_flag=1,
              parent_node_id_type=0, temporal_context_modeling_flag=tca, parent_device_id=0,
              codebook_present_flag=0, dq_flag=1, **W_DIMS)
        assert u[3].payload_offset == 0x28
    assert len(parse_all(hls("16.5_incremental_round2_tca.nnc"))) == 4   # bias omitted


def test_16_6_codebook():
    u = parse_all(hls("16.6_codebook.nnc"))
    cb = u[3].fields["codebook"]
    check(cb, codebook_egk=5, codebook_size=12, codebook_centre_offset=-3, CbZeroOffset=3,
          codebook_zero_value=-68, codebook_delta_left=[26, 26, 27],
          Codebook=[-150, -123, -96, -68, -41, -14, 14, 41, 68, 96, 123, 150])
    assert cb["codebook_delta_right"][4:] == [26, 26, 27, 26, 26, 27, 26, 26]
    check(u[3].fields, codebook_present_flag=1, dq_flag=0, **W_DIMS)
    assert u[3].payload_offset == 0x33
    cb2 = u[4].fields["codebook"]
    check(cb2, Codebook=[-209715, 0, 104858, 419430], CbZeroOffset=0, codebook_size=4)
    assert "codebook2" not in u[3].fields


def test_16_7_raw_float():
    data = hls("16.7_raw_float_handbuilt.nnc")
    u = parse_all(data)[4]
    check(u.fields, nnr_unit_size=32, nnr_compressed_data_unit_payload_type=2,
          topology_elem_id="fc.bias", node_id_present_flag=1, device_id=0, parameter_id=1,
          put_node_depth=0, tensor_dimensions_flag=1, cabac_unary_length_flag=0,
          compressed_parameter_types=0, count_tensor_dimensions=1, tensor_dimensions=[4],
          dq_flag=0, codebook_present_flag=0, cabac_unary_length_minus1=9)   # inferred (HLS §11)
    assert (u.payload_offset, u.payload_end) == (0x58, 0x68)
    assert struct.unpack("<4f", data[u.payload_offset:u.payload_end]) == (0.5, -0.25, 0.0, 0.125)


def test_16_8_mps_maps():
    u = parse_all(hls("16.8_mps_perfmap_handbuilt_STR_MPS_only.nnc"))[1]
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
    check(u.fields, nnr_unit_size=43, topology_carriage_flag=1, mps_sparsification_flag=1,
          mps_pruning_flag=0, mps_unification_flag=0, mps_decomposition_performance_map_flag=0,
          mps_quantization_method_flags=1, mps_topology_indexed_reference_flag=0,
          base_model_id_present_flag=1, validation_set_performance_present_flag=1,
          metric_type_performance_map_valid_flag=0, mps_parent_signalling_enabled_flag=0,
          base_model_id="resnet", performance_metric_type="top1", mps_qp_density=2,
          mps_quantization_parameter=-5, validation_set_performance=f32(0.7))
    check(u.fields["sparsification_performance_map"], spm_count_thresholds=2,
          sparsification_threshold=[f32(0.1)], non_zero_ratio=[0.5], spm_nn_accuracy=[0.75],
          spm_count_classes=[1], spm_class_bitmask=[1], spm_nn_class_accuracy=[[0.5]])


def test_16_9_lps():
    data = bytes.fromhex("00040201") + bytes.fromhex("00080a8002400080")
    state = SyntaxState()
    u = parse_all(data, state)[1]
    check(u.fields, nnr_unit_type=2, lps_self_contained_flag=1, nnr_reserved_zero_7bits=0,
          nnr_reserved_zero_1bit=0, lps_sparsification_flag=0, lps_pruning_flag=0,
          lps_unification_flag=0, lps_quantization_method_flags=1, nnr_reserved_zero_1bit_2=0,
          lps_qp_density=2, lps_quantization_parameter=0)
    assert state.lps is u.fields
    assert write_unit(2, u.fields, SyntaxState()) == data[4:]


def test_16_10_long_form():
    body = b"\x0e\x00\x00" + b"a" * 74045 + b"\x00"   # a TPL unit of 74053 bytes
    out = write_unit(3, {"topology_storage_format": 0, "topology_compression_format": 0,
                         "topology_data": "a" * 74045}, SyntaxState())
    assert len(out) == 74053 and out[:4] == bytes.fromhex("80012145")
    assert out[4:] == body
    (span,) = split_units(out)
    assert span == UnitSpan(0, 0, 74053, 4)
    assert parse_unit(out, span, SyntaxState()).fields["nnr_unit_size_flag"] == 1


def test_16_11_int():
    u = parse_all(hls("16.11_int.nnc"))[3]
    check(u.fields, nnr_compressed_data_unit_payload_type=0, topology_elem_id="cnt", dq_flag=0,
          codebook_present_flag=0, count_tensor_dimensions=1, tensor_dimensions=[4],
          cabac_unary_length_minus1=10, **NODE0)
    assert u.payload_offset == 0x1f and u.payload_end == 0x25


@pytest.mark.parametrize("name", sorted(p.name for p in HLS.glob("*.nnc")) if HLS.exists() else [])
def test_hls_rewrite_identical_and_traces_match(name):
    data = (HLS / name).read_bytes()
    rt = Trace()
    units = parse_all(data, trace=rt)
    state = SyntaxState()
    wt = Trace()
    out = b""
    for u in units:
        payload = data[u.payload_offset:u.payload_end] if u.nnr_unit_type == 5 else b""
        out += write_unit(u.nnr_unit_type, u.fields, state, payload, trace=wt,
                          stream_offset=len(out))
    assert out == data
    assert wt.lines() == rt.lines()


# -- NNCodec reference vectors ----------------------------------------------------------------
def _cases():
    out = []
    for d in REF_DIRS:
        if d.exists():
            out += sorted(p.parent for p in d.glob("*/config.json"))
    return out


CASES = _cases()


def _compare(ours, ref):
    bad = []
    for k, v in ref.items():
        if k.startswith("_"):
            continue
        if k in ("codebook", "CbZeroOffset", "codebook_egk", "codebook_size"):
            o = ours.get("codebook", {}).get("Codebook" if k == "codebook" else k, "<absent>")
        elif k == "cabac_entry_point_list":
            o = [dict(cabac_value=a, bit_offset=b, **({"dq_state": d} if ours["dq_flag"] else {}))
                 for a, b, d in zip(ours["ep_arith_value"], ours["BitOffsetDelta"],
                                    ours["ep_dq_state"])]
        else:
            o = ours.get(k, "<absent>")
        if o != v:
            bad.append((k, o, v))
    return bad


def test_reference_vectors_present():
    if not CASES:
        pytest.skip("bitstreams/nncodec-2.1.3 and bitstreams/nncodec-1.x not copied yet")
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_reference_vector(case):
    cfg = json.loads((case / "config.json").read_text())
    if "nnr_units" in cfg:
        runs = [("bitstream.nnc", cfg["nnr_units"])]
    else:
        runs = [(f"step{s['step']}_bitstream.nnc", s["nnr_units"]) for s in cfg["steps"]]
    for fname, ref_units in runs:
        path = case / fname
        if not path.exists():
            pytest.skip(f"{path} not copied")
        data = path.read_bytes()
        units = parse_all(data)
        assert len(units) == len(ref_units)
        for u, ref in zip(units, ref_units):
            assert (u.offset, u.size) == (ref["offset"], ref["size"])
            assert u.type_name == ref["type"]
            assert _compare(u.fields, ref["fields"]) == [], (fname, u.index)
            if "header_bytes" in ref:
                assert u.payload_offset - u.offset == ref["header_bytes"]
        assert rewrite_all(data, units) == data


# -- errors --------------------------------------------------------------------------------
STR1 = bytes.fromhex("00040201")
MPS1 = bytes.fromhex("0008068100400080")
NDU_W = None


def _state_p1():
    s = SyntaxState()
    parse_all(STR1 + MPS1, s)
    return s


def _one(data, state=None):
    state = state or _state_p1()
    (span,) = split_units(data)
    return parse_unit(data, span, state)


def test_profile_out_of_range():
    with pytest.raises(SyntaxValueError) as ei:
        parse_all(bytes.fromhex("00040202"))
    e = ei.value
    assert e.unit_index == 0 and e.bit_offset == 24 and "general_profile_idc" in e.element


def test_unit_types():
    with pytest.raises(UnsupportedFeatureError):
        parse_all(bytes.fromhex("00031a"))      # type 6 AGG
    with pytest.raises(SyntaxValueError) as ei:
        parse_all(bytes.fromhex("00031e"))      # type 7
    assert ei.value.element.endswith("nnr_unit_type") and ei.value.bit_offset == 16


def test_unit_size_errors():
    with pytest.raises(UnitSizeMismatchError):
        split_units(bytes.fromhex("0002"))      # smaller than size field + header byte
    with pytest.raises(TruncatedBitstreamError) as ei:
        split_units(STR1 + bytes.fromhex("0008068100"))
    assert ei.value.unit_index == 1 and ei.value.bit_offset == 32
    with pytest.raises(TruncatedBitstreamError):
        split_units(b"\x80\x00")               # long form cut inside the size field
    with pytest.raises(UnitSizeMismatchError):  # trailing byte in the STR
        parse_all(bytes.fromhex("0005020100"))
    with pytest.raises(UnitSizeMismatchError):  # MPS content longer than its size
        parse_all(STR1 + bytes.fromhex("000606810040"))


def test_ordering_errors():
    with pytest.raises(ConstraintViolationError):
        parse_all(MPS1)
    ndu = hls("16.1_profile1_fc.nnc")[18:72]
    with pytest.raises(ConstraintViolationError):
        parse_all(STR1 + ndu)


def _ndu_bytes(fields, payload=b"\x80"):
    return write_unit(5, fields, _state_p1(), payload)


BASE_NDU = dict(nnr_compressed_data_unit_payload_type=1,
                nnr_multiple_topology_elements_present_flag=0,
                nnr_decompressed_data_format_present_flag=0, input_parameters_present_flag=1,
                topology_elem_id="w", codebook_present_flag=0, dq_flag=1, **NODE0, **W_DIMS)


def _patch_bits(data, bit, nbits, value):
    v = int.from_bytes(data, "big")
    total = len(data) * 8
    shift = total - bit - nbits
    v = (v & ~(((1 << nbits) - 1) << shift)) | (value << shift)
    return v.to_bytes(len(data), "big")


def test_payload_type_reserved():
    data = _ndu_bytes(BASE_NDU)
    bad = _patch_bits(data, 24, 5, 4)
    with pytest.raises(SyntaxValueError) as ei:
        _one(bad)
    assert "payload_type" in ei.value.element and ei.value.bit_offset == 24


def test_parent_node_id_type_3():
    s = SyntaxState()
    data = hls("16.5_incremental_round1.nnc")
    units = parse_all(data, s)
    ndu = data[units[3].offset:units[3].offset + units[3].size]
    # parent_node_id_type at 0x21.7 relative to stream = byte 0x21-0x12 of the unit, bit 7
    bad = _patch_bits(ndu, (0x21 - 0x12) * 8 + 7, 2, 3)
    with pytest.raises(SyntaxValueError) as ei:
        parse_unit(bad, split_units(bad)[0], s)
    assert ei.value.element.endswith("parent_node_id_type") and ei.value.unit_index == 0


def test_count_tensor_dimensions_zero_and_zero_dim():
    with pytest.raises(SyntaxValueError):
        _ndu_bytes(dict(BASE_NDU, count_tensor_dimensions=0, tensor_dimensions=[]))
    with pytest.raises(SyntaxValueError):
        _ndu_bytes(dict(BASE_NDU, tensor_dimensions=[4, 0]))
    data = _ndu_bytes(BASE_NDU)
    # count_tensor_dimensions ue(1) '0100' (2) -> '11' would be 1; force 0: bits '10'
    f = _one(data).fields
    assert f["count_tensor_dimensions"] == 2


def test_codebook_errors():
    cb = dict(codebook_egk=0, codebook_size=3, codebook_centre_offset=0, codebook_zero_value=0,
              codebook_delta_left=[0], codebook_delta_right=[None, None, 0])
    ok = _ndu_bytes(dict(BASE_NDU, codebook_present_flag=1, dq_flag=0, codebook=cb))
    f = _one(ok).fields
    assert f["codebook"]["Codebook"] == [-1, 0, 1] and f["codebook"]["CbZeroOffset"] == 1
    with pytest.raises(SyntaxValueError):
        _ndu_bytes(dict(BASE_NDU, codebook_present_flag=1, codebook=dict(cb, codebook_size=0)))
    with pytest.raises(SyntaxValueError):
        _ndu_bytes(dict(BASE_NDU, codebook_present_flag=1,
                        codebook=dict(cb, codebook_centre_offset=2)))
    # from Codebook alone, the deltas are derived
    out = _ndu_bytes(dict(BASE_NDU, codebook_present_flag=1, dq_flag=0,
                          codebook={"codebook_egk": 0, "CbZeroOffset": 1, "Codebook": [-1, 0, 1]}))
    assert out == ok
    # a codebook_size larger than the unit: never a huge allocation
    bad = _patch_bits(ok, 0, 0, 0)
    assert _one(bad)


def test_out_of_band_resolution():
    fields = dict(BASE_NDU, tensor_dimensions_flag=0)
    data = _ndu_bytes(fields)
    with pytest.raises(UnsupportedFeatureError) as ei:
        _one(data)
    assert "out-of-band" in str(ei.value) and "unit 0" in str(ei.value)

    def oob(f):
        f["count_tensor_dimensions"] = 2
        f["tensor_dimensions"] = [4, 3]
    s = _state_p1()
    s._oob = oob
    u = parse_unit(data, split_units(data)[0], s)
    assert u.fields["tensor_dimensions"] == [4, 3] and u.fields["scan_order"] == 0

    class State(SyntaxState):
        def resolve_out_of_band(self, f):
            oob(f)
    s2 = State()
    parse_all(STR1 + MPS1, s2)
    assert parse_unit(data, split_units(data)[0], s2).fields["Rows"] == 4


def test_unsupported_ndu_features():
    with pytest.raises(UnsupportedFeatureError):
        _ndu_bytes(dict(BASE_NDU, nnr_multiple_topology_elements_present_flag=1,
                        topology_elem_id_list=["a", "b"]))
    s = SyntaxState()
    parse_all(STR1 + bytes.fromhex("0008068180400080"), s)   # mps_topology_indexed_reference 1
    indexed = write_unit(5, dict(BASE_NDU, topology_elem_id_index=3), s, b"\x80")
    assert parse_unit(indexed, split_units(indexed)[0], s).fields["topology_elem_id_index"] == 3
    with pytest.raises(UnsupportedFeatureError):
        parse_all(bytes.fromhex("0004020100060e050000"))     # TPL pruning container


def test_writer_checks_derived_and_inferred():
    with pytest.raises(SyntaxValueError):     # derived NumEntryPoints disagrees
        _ndu_bytes(dict(BASE_NDU, scan_order=1, NumEntryPoints=3, ep_arith_value=[],
                        ep_dq_state=[], BitOffsetDelta=[]))
    with pytest.raises(SyntaxValueError):     # dq_flag inferred 0 for RAW_FLOAT
        _ndu_bytes(dict(BASE_NDU, nnr_compressed_data_unit_payload_type=2, dq_flag=1))
    with pytest.raises(SyntaxValueError) as ei:   # element missing
        _ndu_bytes({k: v for k, v in BASE_NDU.items() if k != "dq_flag"})
    assert ei.value.element.endswith("dq_flag")
    with pytest.raises(SyntaxValueError):
        write_unit(0, {"general_profile_idc": 1}, SyntaxState(), b"x")


def test_entry_points_from_bit_offset_delta():
    f = dict(BASE_NDU, tensor_dimensions=[20, 10], scan_order=1, ep_arith_value=[57, 50],
             ep_dq_state=[2, 0], BitOffsetDelta=[531, 530])
    data = write_unit(5, f, _state_p1(), b"")
    ref = hls("16.3_scan1_entrypoints.nnc")[0x12:0x25]
    assert data[2:] == ref[2:]


def test_strict_mode():
    data = STR1 + bytes.fromhex("0008068100400081")   # alignment byte 0x81
    parse_all(data)
    with pytest.raises(SyntaxValueError):
        parse_all(data, SyntaxState(strict=True))
    data = STR1 + bytes.fromhex("0008068101400080")   # reserved 2 bits = 01
    parse_all(data)
    with pytest.raises(SyntaxValueError):
        parse_all(data, SyntaxState(strict=True))


# -- robustness ------------------------------------------------------------------------------
def _real_streams():
    out = [p for p in sorted(HLS.glob("*.nnc"))] if HLS.exists() else []
    for c in CASES[:12]:
        out += sorted(c.glob("*bitstream.nnc"))[:1]
    return out


def _headers_only(data):
    """The stream with NDU payloads cut to 0 bytes (headers only), sizes fixed."""
    out = b""
    state = SyntaxState()
    for u in parse_all(data):
        out += write_unit(u.nnr_unit_type, u.fields, state, b"")
    return out


def _parse_everything(data):
    try:
        for u in parse_all(data):
            pass
    except NNRError:
        pass


@pytest.mark.parametrize("path", _real_streams(), ids=lambda p: p.parent.name + "/" + p.name)
def test_every_truncation_raises_only_nnr_errors(path):
    data = _headers_only(path.read_bytes())
    for n in range(len(data)):
        _parse_everything(data[:n])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(hs.data())
def test_bit_flips_raise_only_nnr_errors(d):
    streams = _real_streams()
    if not streams:
        pytest.skip("no streams")
    data = bytearray(_headers_only(d.draw(hs.sampled_from(streams)).read_bytes()))
    for _ in range(d.draw(hs.integers(1, 4))):
        bit = d.draw(hs.integers(0, len(data) * 8 - 1))
        data[bit // 8] ^= 0x80 >> (bit % 8)
    _parse_everything(bytes(data))


@settings(max_examples=200, deadline=None)
@given(hs.binary(max_size=64))
def test_random_bytes_raise_only_nnr_errors(data):
    _parse_everything(STR1 + MPS1 + data)
    _parse_everything(data)
