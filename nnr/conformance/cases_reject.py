"""Conformance cases, continued: must-reject streams derived from valid ones (each names the error
class a decoder must raise), and the hostile-input cases of resource limits and long rows.
Registered in cases.CASES after the cases of cases.py, in this order."""
import numpy as np

from nnr.conformance.cases import built, case, plain
from nnr.conformance.streams import (assemble, find, gauss, raw_unit, rebuild, set_size, unit_offsets,
                                     units_of)
from nnr_core.syntax.constants import NNR_AGG, NNR_NDU, NNR_QNT, NNR_TPL

# -- must-reject streams, derived from valid ones ----------------------------------------------------
def reject(name, description, error_class, base_id, damage, kind="stream", tags=()):
    """``damage(steps) -> steps``: the last step must raise ``error_class``."""
    return case(f"reject/{name}", description, lambda: damage(list(built(base_id))), kind=kind, expect="reject",
                error_class=error_class, encoder="derived", derived_from=base_id, tags=["reject", *tags])


def last(fn):
    """Damage only the (one) last step: fn(bytes) -> bytes."""
    return lambda steps: steps[:-1] + [fn(steps[-1])]


def _units_edit(edit):
    return last(lambda data: rebuild(data, edit))


def _ndu_offset(data, n=0):
    return [o for (o, s), u in zip(unit_offsets(data), units_of(data)) if u[0] == NNR_NDU][n]


def _cut_in_ndu(data, frac=0.5):
    off, size = [(o, s) for (o, s), u in zip(unit_offsets(data), units_of(data)) if u[0] == NNR_NDU][0]
    return data[:off + int(size * frac)]


def _ndu_size(delta, trim=False, pad=b""):
    """Change the first NDU's nnr_unit_size by delta; trim/pad its payload to match."""
    def fn(data):
        offs = unit_offsets(data)
        idx = [n for n, u in enumerate(units_of(data)) if u[0] == NNR_NDU][0]
        off, size = offs[idx]
        body = data[off:off + size]
        if trim:
            body = body[:size + delta]
        body = body + pad
        sized = (((int.from_bytes(body[:2], "big") & 0x7FFF) + delta).to_bytes(2, "big")) + body[2:]
        return data[:off] + sized + data[off + size:]
    return fn


def _byte(pos, value):
    return lambda data: data[:pos] + bytes([value]) + data[pos + 1:]


def _header_byte(unit_kind, byte_in_unit, fn):
    """Rewrite one byte of the first unit of ``unit_kind`` (short size form): fn(old) -> new."""
    def damage(data):
        off = [o for (o, s), u in zip(unit_offsets(data), units_of(data)) if u[0] == unit_kind][0]
        p = off + byte_in_unit
        return data[:p] + bytes([fn(data[p])]) + data[p + 1:]
    return damage



def _element_bit(data, suffix):
    """Bit position of the first syntax element of `data` whose trace path ends with `suffix`."""
    from nnr_core.bitstream.trace import Trace
    from nnr_core.syntax.units import parse_units
    tr = Trace()
    parse_units(data, trace=tr)
    return next(r.bit_pos for r in tr if r.path.endswith(suffix))


def _patch_bits(data, pos, bits, op):
    """`data` with op ("set", "clear" or "flip") applied to the bits at pos .. pos+len-1 where
    `bits` (a string of 0/1, first bit first) has a 1."""
    b = bytearray(data)
    for i, bit in enumerate(bits):
        if bit == "1":
            mask = 0x80 >> ((pos + i) % 8)
            byte = (pos + i) // 8
            b[byte] = b[byte] | mask if op == "set" else b[byte] & ~mask & 0xFF if op == "clear" else b[byte] ^ mask
    return bytes(b)


def _scan_order(data, value):
    units = units_of(data)
    find(units, NNR_NDU)[1]["scan_order"] = 0
    out = assemble(units)
    # scan_order u(4) is written as 0: find it through the trace and patch the bits
    return _patch_bits(out, _element_bit(out, ".scan_order"), format(value, "04b"), "set")


def _parent_type3(data):
    return _patch_bits(data, _element_bit(data, ".parent_node_id_type"), "11", "set")


def _dims(data, dims):
    # patch the ue(7) code of the first dimension to 0 (same length, k=7: '0' + 7 bits)
    return _patch_bits(data, _element_bit(data, "tensor_dimensions[0]"), "1" * 8, "clear")


def _cb(data, size=None, centre=None):
    if size == 0:
        # codebook_size ue(2): replace the code with '000' (= 0), keeping the rest by re-coding is
        # impossible; the unit is cut right after it instead (the check fires before anything else)
        return _patch_bits(data, _element_bit(data, "codebook.codebook_size"), "111", "clear")
    # a centre offset far outside the codebook: ie(2) of +40 is ue(2) code of 79 -> '0000' '1' +
    # 2+4 bits; simplest: flip the leading bits
    return _patch_bits(data, _element_bit(data, "codebook.codebook_centre_offset"), "1" * 6, "flip")


def _swap_to_front(data, kind):
    offs = unit_offsets(data)
    kinds = [u[0] for u in units_of(data)]
    i = kinds.index(kind)
    o, s = offs[i]
    return data[:4] + data[o:o + s] + data[4:o] + data[o + s:]


def _block_single(units):
    f = find(units, NNR_NDU)[1]
    f["nnr_multiple_topology_elements_present_flag"] = 0
    f["topology_elem_id"] = f.pop("topology_elem_id_list")[0]
    f.pop("count_topology_elements_minus2", None)


def _drop_reflist(units):
    tpl = find(units, NNR_TPL)[1]
    tpl.update(topology_storage_format=0, topology_data="")
    tpl.pop("topology_elem_id_list")


def _qnt():
    # NNR_QNT header (storage and compression format) and a NUL-terminated quantization_data
    return raw_unit(NNR_QNT, b"\x00\x00" + b"q\x00")


def _ndu_pdc(data):
    units = units_of(data)
    # the writer refuses the element on an NDU: write the unit with the flag off, then insert the
    # flag bit and the 8-bit counter by hand (header byte 2 holds type, idf, pdc flag)
    out = assemble(units)
    o = _ndu_offset(out)
    size = (int.from_bytes(out[o:o + 2], "big") & 0x7FFF) + 1
    head = bytes([out[o + 2] | 1, 0x05])
    return out[:o] + size.to_bytes(2, "big") + head + out[o + 3:o + (size - 1)]


def _pad_nth_ndu(data, n, pad):
    units = units_of(data)
    ndus = [u for u in units if u[0] == NNR_NDU]
    ndus[n][2] = ndus[n][2] + pad
    return assemble(units)




P1 = "nnr/p1_float"
M = "nnr/multi_tensor"
# truncation
reject("truncated_in_ndu_payload", "the stream ends in the middle of the NDU payload", "TruncatedBitstreamError", P1,
       last(lambda d: _cut_in_ndu(d, 0.5)))
reject("truncated_in_ndu_header", "the stream ends inside the NDU header", "TruncatedBitstreamError", P1,
       last(lambda d: _cut_in_ndu(d, 0.02) if _cut_in_ndu(d, 0.02) != d[:_ndu_offset(d)] else d[:_ndu_offset(d) + 3]))
reject("truncated_in_size_field", "the stream ends after the first byte of a unit's nnr_unit_size", "TruncatedBitstreamError",
       P1, last(lambda d: d[:_ndu_offset(d) + 1]))
reject("truncated_in_mps", "the stream ends inside the MPS", "TruncatedBitstreamError", P1, last(lambda d: d[:9]))
reject("truncated_long_size_field", "long-form size field cut after two bytes", "TruncatedBitstreamError",
       "nnr/long_size_form", last(lambda d: d[:2]))
reject("truncated_sequence_step", "an incremental sequence whose last update is cut short", "TruncatedBitstreamError",
       "nnr/inc_tca", last(lambda d: _cut_in_ndu(d, 0.6)), kind="sequence")
# unit sizes that disagree with the content
reject("size_mps_too_large", "MPS nnr_unit_size one byte larger than its content", "UnitSizeMismatchError", P1,
       last(lambda d: set_size(d[:4], 0, 0) + set_size(d[4:12], 0, 1)[:8] + b"\x00" + d[12:]))
reject("size_mps_too_small", "MPS nnr_unit_size one byte smaller than its content", "UnitSizeMismatchError", P1,
       last(lambda d: d[:4] + set_size(d[4:12], 0, -1)[:7] + d[12:]))
reject("size_tpl_too_small", "TPL nnr_unit_size smaller than its content", "UnitSizeMismatchError", P1,
       last(lambda d: d[:12] + set_size(d[12:18], 0, -1)[:5] + d[18:]))
reject("size_zero", "a unit with nnr_unit_size 0", "UnitSizeMismatchError", P1, last(lambda d: d[:4] + b"\x00\x00" + d[6:]))
reject("size_past_end", "the NDU's nnr_unit_size runs past the end of the stream", "TruncatedBitstreamError", P1,
       last(_ndu_size(+40)))
reject("size_str_too_large", "STR nnr_unit_size 5 (one byte of garbage in the unit)", "UnitSizeMismatchError", P1,
       last(lambda d: b"\x00\x05" + d[2:4] + b"\x00" + d[4:]))
# payload ends
reject("payload_ends_early", "the NDU payload loses its last byte (size adjusted): ends before the terminating bin",
       "EntropyDecodingError", P1, last(_ndu_size(-1, trim=True)))
reject("payload_ends_early_scan", "a scan-order-2 payload cut by 4 bytes (size adjusted)", "EntropyDecodingError",
       "nnr/scan2_dq", last(_ndu_size(-4, trim=True)))
reject("payload_trailing_byte", "one byte after the terminating bin (size adjusted)", "EntropyDecodingError", P1,
       last(_ndu_size(+1, pad=b"\x00")))
reject("payload_trailing_bytes_multi", "bytes after the terminating bin in the 3rd NDU of a model",
       "EntropyDecodingError", M, last(lambda d: _pad_nth_ndu(d, 2, b"\xff\x00")))
reject("payload_stop_bit", "the payload's final byte (rbsp stop bit) zeroed", "EntropyDecodingError", P1,
       last(lambda d: d[:-1] + b"\x00"))
reject("entry_point_wrong", "an ep_arith_value that disagrees with the decoded payload", "EntropyDecodingError",
       "nnr/scan1_dq", _units_edit(lambda units: find(units, NNR_NDU)[1]["ep_arith_value"].__setitem__(
           0, find(units, NNR_NDU)[1]["ep_arith_value"][0] ^ 1)))
reject("entry_point_offset_wrong", "an entry point's bit offset off by one", "EntropyDecodingError", "nnr/scan2_nodq",
       _units_edit(lambda units: find(units, NNR_NDU)[1].__setitem__("ep_bit_offset_delta",
                                                                    find(units, NNR_NDU)[1]["ep_bit_offset_delta"] + 1)))
reject("tensor_too_large_for_payload", "tensor_dimensions far larger than the payload can carry", "EntropyDecodingError",
       P1, _units_edit(lambda units: find(units, NNR_NDU)[1].update(tensor_dimensions=[16, 24, 100000], count_tensor_dimensions=3)))


# out-of-range elements and unknown types
reject("profile_idc_2", "general_profile_idc 2", "SyntaxValueError", P1, last(_byte(3, 2)))
reject("profile_idc_255", "general_profile_idc 255", "SyntaxValueError", P1, last(_byte(3, 255)))
reject("unit_type_7", "an unknown (reserved) nnr_unit_type 7 after the MPS", "SyntaxValueError", P1,
       last(lambda d: d[:12] + raw_unit(7, b"\x00") + d[12:]))
reject("unit_type_63", "nnr_unit_type 63", "SyntaxValueError", P1, last(lambda d: d[:12] + raw_unit(63, b"") + d[12:]))
reject("payload_type_4", "NDU payload type 4 (reserved)", "SyntaxValueError", P1,
       last(_header_byte(NNR_NDU, 3, lambda b: (4 << 3) | (b & 7))))
reject("payload_type_31", "NDU payload type 31", "SyntaxValueError", P1, last(_header_byte(NNR_NDU, 3, lambda b: (31 << 3) | (b & 7))))
reject("scan_order_5", "scan_order 5 (reserved)", "SyntaxValueError", P1,
       last(lambda d: _scan_order(d, 5)))
reject("scan_order_15", "scan_order 15", "SyntaxValueError", P1, last(lambda d: _scan_order(d, 15)))
reject("tpl_format_7", "topology_storage_format 7 (reserved)", "SyntaxValueError", P1, last(_header_byte(NNR_TPL, 3, lambda b: 7)))
reject("tpl_compression_2", "topology_compression_format 2", "SyntaxValueError", P1, last(_header_byte(NNR_TPL, 4, lambda b: 2)))
reject("parent_type_3", "parent_node_id_type 3 (reserved)", "SyntaxValueError", "nnr/parent_sha256",
       last(lambda d: _parent_type3(d)), kind="sequence")
reject("dimension_zero", "a tensor dimension of 0", "SyntaxValueError", P1,
       last(lambda d: _dims(d, [0, 24])))
reject("codebook_size_zero", "codebook_size 0", "SyntaxValueError", "nnr/codebook_nodq", last(lambda d: _cb(d, size=0)))
reject("codebook_centre_out_of_range", "codebook_centre_offset puts CbZeroOffset outside the codebook", "SyntaxValueError",
       "nnr/codebook_nodq", last(lambda d: _cb(d, centre=40)))
# ordering
reject("ndu_before_mps", "an NDU before the MPS", "ConstraintViolationError", P1, last(lambda d: _swap_to_front(d, NNR_NDU)))
reject("tpl_before_mps", "the TPL before the MPS", "ConstraintViolationError", P1, last(lambda d: d[:4] + d[12:18] + d[4:12] + d[18:]))
reject("mps_before_str", "the MPS before the STR", "ConstraintViolationError", P1, last(lambda d: d[4:12] + d[:4] + d[12:]))
reject("second_str", "a second NNR_STR", "ConstraintViolationError", P1, last(lambda d: d[:12] + d[:4] + d[12:]))
reject("second_mps", "a second NNR_MPS", "ConstraintViolationError", P1, last(lambda d: d[:12] + d[4:12] + d[12:]))
reject("mps_after_ndu", "an MPS after an NDU", "ConstraintViolationError", M,
       last(lambda d: d[:_ndu_offset(d, 1)] + d[4:12] + d[_ndu_offset(d, 1):]))
reject("duplicate_tensor", "the same tensor twice", "ConstraintViolationError", P1, last(lambda d: d + d[_ndu_offset(d):]))
reject("block_without_multiple_flag", "NNR_PT_BLOCK with nnr_multiple_topology_elements_present_flag 0",
       "ConstraintViolationError", "nnr/block_w_bias", _units_edit(_block_single))
reject("g_without_h", "a decomposed G unit not followed by its H unit", "ConstraintViolationError", "nnr/decomposition_pair",
       last(lambda d: d[:_ndu_offset(d, 1)]))
reject("tca_without_reference", "a TCA update decoded without its base", "ConstraintViolationError", "nnr/inc_tca",
       lambda steps: [steps[1]])
reject("tca_depth_mismatch", "an update whose put_node_depth skips a level", "ConstraintViolationError", "nnr/inc_tca",
       lambda steps: [steps[0], steps[2]], kind="sequence")
reject("hdsp_without_history", "an HDSP update decoded without the earlier updates", "ConstraintViolationError",
       "nnr/inc_hdsp", lambda steps: [steps[2]])
reject("indexed_without_reflist", "indexed topology references without the NNR_TPL reference list",
       "ConstraintViolationError", "nnr/tpl_reflist_indexed",
       _units_edit(_drop_reflist))
reject("indexed_out_of_range", "a topology_elem_id_index beyond the reference list", "ConstraintViolationError",
       "nnr/tpl_reflist_indexed", _units_edit(lambda units: find(units, NNR_NDU)[1].update(topology_elem_id_index=99)))
reject("no_str", "a stream without NNR_STR", "ConstraintViolationError", P1, last(lambda d: d[4:]))
# unsupported (valid syntax without public semantics)
reject("qnt_unit", "an NNR_QNT unit (no public semantics)", "UnsupportedFeatureError", P1,
       last(lambda d: d[:18] + _qnt() + d[18:]))
reject("agg_unit", "an NNR_AGG unit (no public syntax)", "UnsupportedFeatureError", P1,
       last(lambda d: d[:18] + raw_unit(NNR_AGG, b"\x00\x00") + d[18:]))
reject("tpl_pruning", "NNR_TPL_PRUN (pruning topology container)", "UnsupportedFeatureError", P1,
       last(_header_byte(NNR_TPL, 3, lambda b: 5)))
reject("ndu_partial_data_counter", "partial_data_counter on an NDU", "UnsupportedFeatureError", P1,
       last(lambda d: _ndu_pdc(d)))
reject("tensor_dimension_mapping", "several topology elements outside NNR_PT_BLOCK "
       "(topology_tensor_dimension_mapping)", "UnsupportedFeatureError", "nnr/block_w_bias",
       last(_header_byte(NNR_NDU, 3, lambda b: (1 << 3) | (b & 7))))
reject("dims_missing_out_of_band", "tensor_dimensions left out and not supplied out of band", "UnsupportedFeatureError",
       "nnr/dims_out_of_band", lambda steps: steps)



def _dc_block(units):
    """An NNR_PT_BLOCK with a decomposed weight (G, H), a bias and two codebooks: the header is
    complete, the payload is the plain block's and cannot hold G and H."""
    f = find(units, NNR_NDU)[1]
    f.update(compressed_parameter_types=1 | 8, topology_elem_id_list=["l.weight_G", "l.weight_H", "l.bias"],
             decomposition_rank=2, g_number_of_rows=12, codebook_present_flag=1, dq_flag=0,
             codebook={"codebook_egk": 1, "Codebook": [-3, -1, 0, 2, 5], "CbZeroOffset": 2},
             codebook2={"codebook_egk": 0, "Codebook": [-1, 0, 1], "CbZeroOffset": 1}, scan_order=1,
             ep_arith_value=[0], ep_dq_state=[0], ep_bit_offset_delta=8, ep_bit_offset_delta_diff=[None])
    f.pop("count_topology_elements_minus2", None)


reject("dc_block_payload_short", "NNR_PT_BLOCK with decomposition (G, H, bias) and a second codebook whose payload "
       "ends before the terminating bin of H", "EntropyDecodingError", "nnr/block_w_bias", _units_edit(_dc_block))


# -- hostile input: resource limits, rows far longer than their payload, values beyond int64 --------
def _wide_sparse():
    w = np.zeros((2, 1_000_000), np.float32)
    w[0, ::1000], w[1, ::997] = 0.3, -0.2
    return {"w": w}


def _large_sparse():
    return {"w": gauss(95, (256, 256)) * (np.random.RandomState(96).rand(256, 256) < 0.05)}


plain("wide_sparse_rows", "two rows of a million elements, one in a thousand non-zero, row skipping off",
      _wide_sparse, ["long_rows"], row_skipping=False)
plain("scan1_large_sparse", "a 256x256 tensor, 5 % non-zero, scan order 1 (32 block rows): large enough for "
      "its block rows to be decoded by several threads", _large_sparse, ["entry_points"], scan_order=1)


def _set_dims(dims):
    def edit(units):
        find(units, NNR_NDU)[1].update(tensor_dimensions=list(dims), count_tensor_dimensions=len(dims))
    return edit


def _cut_payload(keep):
    def edit(units):
        ndu = find(units, NNR_NDU)
        ndu[2] = ndu[2][:int(len(ndu[2]) * keep)]
    return edit


def _codebook_zero_value(value):
    def edit(units):
        cb = find(units, NNR_NDU)[1]["codebook"]
        for derived in ("Codebook", "CbZeroOffset"):
            cb.pop(derived, None)
        cb["codebook_zero_value"] = value
    return edit


def _entry_point_diff(j, value):
    return lambda units: find(units, NNR_NDU)[1]["ep_bit_offset_delta_diff"].__setitem__(j, value)


reject("elements_over_limit", "4 x 536870911 elements (8 GiB of float32), every row skipped by a 38-byte payload: "
       "more than the decoder's default max_total_elements (2^30), refused before anything is allocated",
       "ResourceLimitError", "nnr/allzero_4d_rowskip", _units_edit(_set_dims([4, 536870911])), tags=["limits"])
reject("rows_longer_than_payload", "24 rows of 44739242 elements with row skipping off: the payload cannot hold "
       "the levels (refused after the row-skip flag, before decoding a level)", "EntropyDecodingError",
       "nnr/rowskip_off", _units_edit(_set_dims([24, 44739242])), tags=["limits"])
reject("payload_cut_in_long_row", "the payload of two million-element rows cut to 60 % (size adjusted): it ends "
       "inside a row", "EntropyDecodingError", "nnr/wide_sparse_rows", _units_edit(_cut_payload(0.6)),
       tags=["long_rows"])
reject("codebook_entry_beyond_int64", "codebook_zero_value 2^66: codebook entries beyond int64",
       "SyntaxValueError", "nnr/codebook_nodq", _units_edit(_codebook_zero_value(2 ** 66)))
reject("entry_point_beyond_int64", "an ep_bit_offset_delta_diff of 2^66 (BitOffsetDelta beyond int64) in a tensor "
       "whose block rows are decoded by several threads", "EntropyDecodingError", "nnr/scan1_large_sparse",
       _units_edit(_entry_point_diff(3, 2 ** 66)))
