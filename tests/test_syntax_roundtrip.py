"""The table-driven syntax layer's write -> read -> write properties (hypothesis): every unit
written from drawn fields reads back to the same fields and re-writes to the same bytes."""
from hypothesis import given, settings, strategies as hs

from nnr_core.bitstream.trace import Trace
from nnr_core.syntax.units import SyntaxState, parse_unit, split_units, write_unit


# -- write -> read -> write properties --------------------------------------------------------
f32s = hs.floats(width=32, allow_nan=False)
names = hs.text(alphabet=hs.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12)
small = hs.integers(0, 40)


@hs.composite
def perf_map(draw, kind):
    n = draw(hs.integers(0, 3))
    m = max(n - 1, 0)
    if kind == "spm":
        classes = [draw(hs.integers(0, 2)) for _ in range(m)]
        return dict(spm_count_thresholds=n,
                    sparsification_threshold=[draw(f32s) for _ in range(m)],
                    non_zero_ratio=[draw(f32s) for _ in range(m)],
                    spm_nn_accuracy=[draw(f32s) for _ in range(m)], spm_count_classes=classes,
                    spm_class_bitmask=[draw(small) for _ in range(m)],
                    spm_nn_class_accuracy=[[draw(f32s) for _ in range(c)] for c in classes])
    if kind == "ppm":
        classes = [draw(hs.integers(0, 2)) for _ in range(m)]
        return dict(ppm_count_pruning_ratios=n, pruning_ratio=[draw(f32s) for _ in range(m)],
                    ppm_nn_accuracy=[draw(f32s) for _ in range(m)], ppm_count_classes=classes,
                    ppm_class_bitmask=[draw(small) for _ in range(m)],
                    ppm_nn_class_accuracy=[[draw(f32s) for _ in range(c)] for c in classes])
    if kind == "upm":
        cr = [draw(hs.integers(0, 3)) for _ in range(m)]
        cs = [draw(hs.integers(0, 3)) for _ in range(m)]
        cbd = [draw(hs.integers(0, 3)) for _ in range(m)]
        bm = [draw(hs.integers(0, 2)) for _ in range(m)]
        return dict(upm_count_thresholds=n, count_reshaped_tensor_dimension=cr,
                    reshaped_tensor_dimensions=[[draw(small) for _ in range(max(c - 1, 0))] for c in cr],
                    count_super_block_dimension=cs,
                    super_block_dimensions=[[draw(hs.integers(0, 255)) for _ in range(max(c - 1, 0))] for c in cs],
                    count_block_dimension=cbd,
                    block_dimensions=[[draw(hs.integers(0, 255)) for _ in range(max(c - 1, 0))] for c in cbd],
                    unification_threshold=[draw(f32s) for _ in range(m)],
                    upm_nn_accuracy=[draw(f32s) for _ in range(m)],
                    upm_count_classes=[draw(hs.integers(0, 255)) for _ in range(m)],
                    upm_class_bitmask=bm,
                    upm_nn_class_accuracy=[[draw(f32s) for _ in range(c)] for c in bm])
    classes = [draw(hs.integers(0, 2)) for _ in range(m)]
    return dict(dpm_count_thresholds=n, mse_threshold=[draw(f32s) for _ in range(m)],
                dpm_nn_accuracy=[draw(f32s) for _ in range(m)],
                nn_reduction_ratio=[draw(f32s) for _ in range(m)], dpm_count_classes=classes,
                dpm_nn_class_accuracy=[[draw(f32s) for _ in range(c)] for c in classes])


@hs.composite
def mps(draw, profile):
    f = {k: draw(hs.integers(0, 1)) for k in (
        "topology_carriage_flag", "mps_sparsification_flag", "mps_pruning_flag",
        "mps_unification_flag", "mps_decomposition_performance_map_flag")}
    f["mps_quantization_method_flags"] = draw(hs.integers(0, 7))
    f["mps_topology_indexed_reference_flag"] = draw(hs.integers(0, 1))
    if profile == 1:
        for k in ("base_model_id_present_flag", "validation_set_performance_present_flag",
                  "metric_type_performance_map_valid_flag", "mps_parent_signalling_enabled_flag"):
            f[k] = draw(hs.integers(0, 1))
        if f["mps_parent_signalling_enabled_flag"]:
            f["nnr_pre_flag"] = draw(hs.integers(0, 1))
        if f["base_model_id_present_flag"]:
            f["base_model_id"] = draw(names)
        if f["validation_set_performance_present_flag"] or f["metric_type_performance_map_valid_flag"]:
            f["performance_metric_type"] = draw(names)
        if f["validation_set_performance_present_flag"]:
            f["validation_set_performance"] = draw(f32s)
    if f["mps_quantization_method_flags"] & 3:
        f["mps_qp_density"] = draw(hs.integers(0, 7))
        f["mps_quantization_parameter"] = draw(hs.integers(-4096, 4095))
    for flag, key, kind in (("mps_sparsification_flag", "sparsification_performance_map", "spm"),
                            ("mps_pruning_flag", "pruning_performance_map", "ppm"),
                            ("mps_unification_flag", "unification_performance_map", "upm"),
                            ("mps_decomposition_performance_map_flag",
                             "decomposition_performance_map", "dpm")):
        if f[flag]:
            f[key] = draw(perf_map(kind))
    return f


@hs.composite
def codebook(draw):
    size = draw(hs.integers(1, 8))
    zero = draw(hs.integers(0, size - 1))
    zv = draw(hs.integers(-300, 300))
    vals = [0] * size
    vals[zero] = zv
    for j in range(zero - 1, -1, -1):
        vals[j] = vals[j + 1] - draw(hs.integers(1, 100))
    for j in range(zero + 1, size):
        vals[j] = vals[j - 1] + draw(hs.integers(1, 100))
    return {"codebook_egk": draw(hs.integers(0, 15)), "CbZeroOffset": zero, "Codebook": vals}


@hs.composite
def ndu(draw, profile, parent):
    pt = draw(hs.integers(0, 3))
    f = dict(nnr_compressed_data_unit_payload_type=pt,
             nnr_multiple_topology_elements_present_flag=1 if pt == 3 else 0,
             nnr_decompressed_data_format_present_flag=draw(hs.integers(0, 1)),
             input_parameters_present_flag=1)
    if pt == 3:
        f["topology_elem_id_list"] = draw(hs.lists(names, min_size=2, max_size=4))
    else:
        f["topology_elem_id"] = draw(names)
    if profile == 1:
        f["node_id_present_flag"] = nid = draw(hs.integers(0, 1))
        if nid:
            f.update(device_id=draw(small), parameter_id=draw(small), put_node_depth=draw(small))
        if parent:
            f["parent_node_id_present_flag"] = pp = draw(hs.integers(0, 1))
            if pp:
                t = f["parent_node_id_type"] = draw(hs.integers(0, 2))
                f["temporal_context_modeling_flag"] = draw(hs.integers(0, 1))
                if t == 0:
                    f["parent_device_id"] = draw(small)
                    if not nid:
                        f.update(parameter_id=draw(small), put_node_depth=draw(small))
                elif t == 1:
                    f["parent_node_payload_sha256"] = draw(hs.integers(0, (1 << 256) - 1))
                else:
                    f["parent_node_payload_sha512"] = draw(hs.integers(0, (1 << 512) - 1))
    cpt = draw(hs.integers(0, 15))
    if pt in (1, 3):
        f["codebook_present_flag"] = cbp = draw(hs.integers(0, 1))
        if cbp:
            f["codebook"] = draw(codebook())
            if pt == 3 and cpt & 1:
                f["codebook2"] = draw(codebook())
    if pt != 2:
        f["dq_flag"] = dq = draw(hs.integers(0, 1))
    else:
        dq = 0
    if f["nnr_decompressed_data_format_present_flag"]:
        f["nnr_decompressed_data_format"] = draw(hs.integers(0, 127))
    dims = draw(hs.lists(hs.integers(1, 300), min_size=1, max_size=4))
    f.update(tensor_dimensions_flag=1, cabac_unary_length_flag=draw(hs.integers(0, 1)),
             compressed_parameter_types=cpt, tensor_dimensions=dims)
    if cpt & 1:
        f.update(decomposition_rank=draw(hs.integers(1, 70)), g_number_of_rows=draw(hs.integers(1, 70)))
    if f["cabac_unary_length_flag"]:
        f["cabac_unary_length_minus1"] = draw(hs.integers(0, 255))
    if len(dims) > 1:
        if profile == 1:
            f["first_tensor_dimension_shift"] = draw(hs.integers(0, 3))
        f["scan_order"] = so = draw(hs.integers(0, 4))
        if so:
            from nnr_core.syntax.walker import block_rows_minus1 as br
            if not cpt & 1:
                n = br(dims[0], so)
            elif pt == 3:
                n = br(f["g_number_of_rows"], so) + br(f["decomposition_rank"], so)
            else:
                n = br(f["g_number_of_rows"], so)
            f["ep_arith_value"] = [draw(hs.integers(0, 255)) for _ in range(n)]
            if dq:
                f["ep_dq_state"] = [draw(hs.integers(0, 7)) for _ in range(n)]
            f["BitOffsetDelta"] = [draw(hs.integers(0, 5000)) for _ in range(n)]
    return f


def _roundtrip(unit_type, fields, make_state, payload=b""):
    s1 = make_state()
    t1 = Trace()
    data = write_unit(unit_type, fields, s1, payload, trace=t1)
    s2 = make_state()
    t2 = Trace()
    (span,) = split_units(data)
    u = parse_unit(data, span, s2, trace=t2)
    assert t1.lines() == t2.lines()
    for k, v in fields.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                assert u.fields[k][kk] == vv, (k, kk)
        else:
            assert u.fields[k] == v, k
    assert data[u.payload_offset:u.payload_end] == payload
    assert write_unit(unit_type, u.fields, make_state(), payload) == data
    return u


@settings(max_examples=150, deadline=None)
@given(hs.integers(0, 1).flatmap(lambda p: hs.tuples(hs.just(p), mps(p))))
def test_mps_roundtrip(pf):
    profile, f = pf
    _roundtrip(1, f, lambda: SyntaxState(general_profile_idc=profile))


@settings(max_examples=50, deadline=None)
@given(hs.integers(0, 1), hs.integers(0, 7), hs.integers(-4096, 4095),
       perf_map("spm"), perf_map("ppm"), perf_map("upm"), hs.integers(0, 1), hs.integers(0, 1), hs.integers(0, 1))
def test_lps_roundtrip(sc, qm, qp, spm, ppm, upm, a, b, c):
    f = dict(lps_self_contained_flag=sc, lps_sparsification_flag=a, lps_pruning_flag=b,
             lps_unification_flag=c, lps_quantization_method_flags=qm)
    if qm & 3:
        f.update(lps_qp_density=qm, lps_quantization_parameter=qp)
    if a:
        f["sparsification_performance_map"] = spm
    if b:
        f["pruning_performance_map"] = ppm
    if c:
        f["unification_performance_map"] = upm
    _roundtrip(2, f, SyntaxState)


@settings(max_examples=50, deadline=None)
@given(hs.sampled_from([0, 1, 2, 3, 4, 6]), hs.integers(0, 1), names,
       hs.lists(names, min_size=2, max_size=4))
def test_tpl_qnt_roundtrip(fmt, comp, data, ids):
    f = dict(topology_storage_format=fmt, topology_compression_format=comp)
    if fmt == 6:
        f["topology_elem_id_list"] = ids
    else:
        f["topology_data"] = data
    _roundtrip(3, f, SyntaxState)
    _roundtrip(4, dict(quantization_storage_format=fmt, quantization_compression_format=comp,
                       quantization_data=data), SyntaxState)


@settings(max_examples=300, deadline=None)
@given(hs.integers(0, 1).flatmap(lambda p: hs.integers(0, 1).flatmap(
    lambda par: hs.tuples(hs.just(p), hs.just(par), ndu(p, par)))), hs.binary(max_size=8))
def test_ndu_header_roundtrip(args, payload):
    profile, parent, f = args
    mps_f = dict(topology_carriage_flag=1, mps_sparsification_flag=0, mps_pruning_flag=0,
                 mps_unification_flag=0, mps_decomposition_performance_map_flag=0,
                 mps_quantization_method_flags=1, mps_topology_indexed_reference_flag=0,
                 mps_parent_signalling_enabled_flag=parent if profile == 1 else 0,
                 mps_qp_density=2, mps_quantization_parameter=0)
    _roundtrip(5, f, lambda: SyntaxState(general_profile_idc=profile, mps=dict(mps_f)), payload)
