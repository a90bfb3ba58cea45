"""Edge-case tensors through both encoder paths: the streaming one (each tensor quantized, coded and
written in turn) and the planned one (every tensor quantized first). Both give the same bytes, or
the same EncoderConfigError naming the tensor; huge values rebase the QPs instead of failing."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError, EntropyDecodingError
from nnr_core.cabac.pytwin_levels import num_contexts
from nnr_core.quant.reconstruct import step_size

F32_MAX = float(np.finfo(np.float32).max)
W = np.random.default_rng(0).normal(0, 0.05, (8, 8)).astype(np.float32)

EDGES = {
    "big_1e20": np.full((4, 4), 1e20, dtype=np.float32),
    "big_1e20_1d": np.array([1e20, -3e19, 1.0, 0.0], dtype=np.float32),
    "f32_max": np.array([[F32_MAX, 1.0], [0.5, -1.0]], dtype=np.float32),
    "f32_min": np.array([[-F32_MAX, 1.0], [0.5, -1.0]], dtype=np.float32),
    "denormals": np.array([[1e-45, -1e-40], [0.0, 1e-38]], dtype=np.float32),
    "mixed": np.array([[1e20, 1e-20], [1.0, -3e30]], dtype=np.float32),
    "mixed_moderate": np.array([[1e9, 1e-9], [1.0, -3e8]], dtype=np.float32),
    "guard_edge": np.array([[2.0**23, 1.0], [-0.5, 0.0]], dtype=np.float32),   # |w| / Delta(-32) = 2^31
    "neg_zero": np.array([[-0.0, 0.0], [-0.0, 1.0]], dtype=np.float32),
    "f32_nan": np.array([[1.0, 2.0], [np.nan, 4.0]], dtype=np.float32),
    "f32_inf": np.array([[1.0, -np.inf]], dtype=np.float32),
    "f16_inf": np.array([[np.inf, 1.0]], dtype=np.float16),
    "f16_max": np.array([[65504.0, -65504.0]], dtype=np.float16),
    "f64_1e300": np.array([[1e300, 1.0]]),
    "f64_neg_1e300": np.array([[0.5, -1e300]]),
    "f64_above_f32_max": np.array([[3.5e38, 1.0]]),
    "f64_rounds_to_f32_max": np.array([[3.4028235e38, 1.0]]),
    "f64_inf": np.array([[np.inf, 1.0]]),
    "f64_nan": np.array([[1.0, np.nan]]),
    "int32_min": np.array([np.iinfo(np.int32).min, 0, 5], dtype=np.int32),
    "int32_min_plus_1": np.array([-(2**31) + 1, 2**31 - 1, 0], dtype=np.int32),
    "int64_int32_min": np.array([-(2**31), 1], dtype=np.int64),
    "int64_beyond": np.array([2**40, 1], dtype=np.int64),
    "int64_in_range": np.array([-(2**31) + 1, 2**31 - 1], dtype=np.int64),
    "uint32_beyond": np.array([2**32 - 1, 1], dtype=np.uint32),
    "uint64_in_range": np.array([2**31 - 1, 0], dtype=np.uint64),
    "int8_min": np.array([-128, 127], dtype=np.int8),
    "bool": np.array([True, False, True]),
}

OPTIONS = [{}, {"dq": False}, {"lambda_scale": 1.0}, {"dq": False, "lambda_scale": 1.0}, {"qp_density": 7},
           {"nonweight_qp": -75, "qp_density": 1}]


def outcome(tensors, streaming, jobs=1, **options):
    """Bytes, or (error class, message), of one stateless encode by the chosen path."""
    enc = nnr.Encoder(jobs=jobs, stateful=False, streaming=streaming, **options)
    try:
        return enc.encode(dict(tensors), incremental=False)
    except EncoderConfigError as err:
        return type(err), str(err)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("name", sorted(EDGES))
def test_streaming_and_planned_agree(name, options):
    tensors = {"layer.weight": W, name: EDGES[name], "layer.bias": W[0]}
    planned = outcome(tensors, False, **options)
    assert outcome(tensors, True, **options) == planned
    assert outcome(tensors, True, jobs=2, **options) == planned
    if isinstance(planned, tuple):
        assert repr(name) in planned[1]
        return
    out = nnr.decode(planned)
    coarsest = step_size(-32, options.get("qp_density", 2))       # the weight QP; the others are finer
    for key, value in tensors.items():
        value = np.asarray(value)
        if value.dtype.kind in "iub":
            assert np.array_equal(out[key], value.astype(np.int32))
        else:
            ref = value.astype(np.float32)
            assert np.all(np.abs(out[key] - ref) <= 1e-3 * np.max(np.abs(ref)) + 2 * coarsest)


@pytest.mark.parametrize("name,base_qp", [("big_1e20", 96), ("big_1e20_1d", 96), ("mixed_moderate", 0)])
def test_huge_values_are_streamed_with_a_rebased_qp(name, base_qp, monkeypatch):
    """The streaming path takes the QPs the overflow guard will raise (142 for 1e20, -4 for 1e9) into
    the base QP up front, so it neither fails on the qp offset nor falls back to quantizing the whole
    model first."""
    tensors = {"layer.weight": W, name: EDGES[name]}
    expected = outcome(tensors, False)

    def no_planned(*args, **kwargs):
        raise AssertionError("fell back to the planned path")
    monkeypatch.setattr(nnr.Encoder, "_encode_planned", no_planned)
    data = nnr.encode(tensors, jobs=1)
    assert data == expected
    dec = nnr.Decoder()
    out = dec.decode(data)
    assert dec.units[1].fields["mps_quantization_parameter"] == base_qp
    assert np.max(np.abs(out[name] - EDGES[name])) <= 1e-3 * np.max(np.abs(EDGES[name]))


def test_huge_values_with_a_wide_qp_offset_use_the_largest_base_qp():
    """qp_density 7: the guard's QP (4526) is beyond what a base QP at the bottom of the offset's range
    reaches (4095 + ...), but fits base QP 4095 plus its offset."""
    t = {"b": np.array([[1e20, 3e19], [1.0, -1e20]], dtype=np.float32)}
    data = nnr.encode(t, qp_density=7)
    dec = nnr.Decoder()
    out = dec.decode(data)
    assert dec.units[1].fields["mps_quantization_parameter"] == 4095
    assert np.allclose(out["b"], t["b"], rtol=1e-6, atol=1.0)


def test_qps_too_far_apart_say_what_to_do():
    tensors = {"layer.weight": W, "huge": EDGES["f32_max"]}
    with pytest.raises(EncoderConfigError) as ei:
        nnr.encode(tensors)
    msg = str(ei.value)
    for part in ("'layer.weight'", "'huge'", "QP 388", "overflow guard", "QPs >= 133", "raw_float"):
        assert part in msg, msg
    # both ways out work
    assert np.array_equal(nnr.decode(nnr.encode(tensors, raw_float=("huge",)))["huge"], EDGES["f32_max"])
    nnr.encode(tensors, qp_per_tensor={"layer.weight": 133})


def test_qp_beyond_what_nnc_signals_is_named():
    with pytest.raises(EncoderConfigError) as ei:
        nnr.encode({"huge": EDGES["f32_max"]}, qp_density=7)
    msg = str(ei.value)
    assert "'huge'" in msg and "QP 12416" in msg and "-8192..8190" in msg and "lower qp_density" in msg
    nnr.encode({"huge": EDGES["f32_max"]}, qp_density=5)


@pytest.mark.parametrize("value,shown", [(1e300, "1e+300"), (-1e300, "-1e+300"), (3.5e38, "3.5e+38")])
def test_float64_overflow_is_named_as_such(value, shown):
    arr = np.array([[0.25, value]])
    with pytest.raises(EncoderConfigError) as ei:
        nnr.encode({"w": W, "t64": arr})
    assert str(ei.value) == (f"tensor 't64' (float64): value {shown} at flat index 1 overflows float32 "
                             "(largest finite float32 is 3.4028235e38), which NNC codes")


def test_float64_model_file_overflow(tmp_path, capsys):
    from nnr.cli.nnr_encode import main
    from nnr.modelio.dtypes import to_codec
    with pytest.raises(EncoderConfigError, match=r"tensor 'b' \(float64\): value 1e\+300 at flat index 0 overflows"):
        to_codec("b", np.array([1e300, 1.0]), allow_float64=True)
    out, dtype = to_codec("b", np.array([np.nan, 3.4028235e38]), allow_float64=True)   # NaN: the encoder's to refuse
    assert dtype == "float64" and out.dtype == np.float32 and out[1] == np.float32(F32_MAX)
    np.savez(tmp_path / "m.npz", w=W, b=np.array([[1e300, 1.0]]))
    assert main([str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.nnr"), "-q"]) == 1
    assert "overflows float32 (largest finite float32 is 3.4028235e38)" in capsys.readouterr().err


@pytest.mark.parametrize("unary", [10, 0])
def test_int32_min_round_trips_with_the_reference(tmp_path, unary):
    """-2^31 is an int32: NNR_PT_INT codes it as sign and magnitude 2^31, which the reference encodes
    and decodes; nnr writes the reference's bytes and reads them back exactly (twin and Cython)."""
    from tests.interop.reference import find_reference, read_result, run_jobs, write_job
    reference, why = find_reference()
    if reference is None:
        pytest.skip(f"interop: {why}")
    t = {"idx": np.array([[np.iinfo(np.int32).min, 0, 5], [-1, np.iinfo(np.int32).max, -(2**31) + 1]],
                         dtype=np.int32)}
    data = nnr.encode(t, cabac_unary_length_minus1=unary)
    assert np.array_equal(nnr.decode(data)["idx"], t["idx"])
    options = dict(qp=-32, qp_density=2, nonweight_qp=-75, use_dq=True, codebook_mode=0, scan_order=0,
                   row_skipping=True, param_opt=True, cabac_unary_length_minus1=unary, int_quant_bw=None)
    write_job(str(tmp_path), "enc", "encode", tensors=t, options=options)     # nnr's defaults, spelled out
    write_job(str(tmp_path), "dec", "decode", bitstream=data)
    run_jobs(reference, str(tmp_path))
    kind, ref_bytes = read_result(str(tmp_path / "enc"))
    assert kind == "bitstream" and ref_bytes == data
    kind, ref_out = read_result(str(tmp_path / "dec"))
    assert kind == "decoded" and np.array_equal(ref_out["idx"], t["idx"])


@pytest.mark.parametrize("N", [1, 11])
def test_level_int32_min_in_every_engine(N):
    """Both encoders code the level -2^31 (magnitude 2^31) with the same bytes, and both decoders
    read it back. +2^31 is no int32: both encoders refuse it, and a stream that codes it (written
    with the twin's unchecked binarization) is refused by both decoders."""
    from nnr_core.cabac import _decoder, _encoder, pytwin, pytwin_enc
    levels = [-(2**31), 7, 2**31 - 1, -(2**31) + 1]
    payloads = []
    for enc in (_encoder.CabacEncoder(), pytwin_enc.CabacEncoder()):
        enc.init_contexts(num_contexts(N))
        for k in levels:
            enc.encode_level(k, 0, 0, 0, 0, N)
        for k in (2**31, -(2**31) - 1):
            with pytest.raises(EncoderConfigError, match="does not fit int32"):
                enc.encode_level(k, 0, 0, 0, 0, N)
        payloads.append(enc.finish())
    assert payloads[0] == payloads[1]
    for dec_cls in (_decoder.CabacDecoder, pytwin.CabacDecoder):
        dec = dec_cls(payloads[0])
        dec.init_contexts(num_contexts(N))
        assert [dec.decode_level(0, 0, 0, 0, N) for _ in levels] == levels
    bad = pytwin_enc.CabacEncoder()
    bad.init_contexts(num_contexts(N))
    bad._binarize_level(2**31, 0, 0, 0, 0, N)
    payload = bad.finish()
    for dec_cls in (_decoder.CabacDecoder, pytwin.CabacDecoder):
        dec = dec_cls(payload)
        dec.init_contexts(num_contexts(N))
        with pytest.raises(EntropyDecodingError, match="exceeds int32|does not fit int32"):
            dec.decode_level(0, 0, 0, 0, N)


def test_bfloat16_arrays_are_widened():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    b = np.array([[1.5, -2.25], [1e20, 0.0]], dtype=ml_dtypes.bfloat16)
    assert nnr.encode({"b": b}) == nnr.encode({"b": b.astype(np.float32)})


def test_memory_mapped_safetensors_with_huge_values(tmp_path):
    """nnr_encode streams memory-mapped safetensors: huge values code as the planned path codes them."""
    from safetensors.numpy import save_file
    from nnr.cli.nnr_encode import main
    from nnr.modelio import load_model
    path = tmp_path / "m.safetensors"
    save_file({"layer.weight": W, "big": EDGES["big_1e20"], "mixed": EDGES["mixed_moderate"]}, str(path))
    assert main([str(path), "-o", str(tmp_path / "m.nnr"), "-q", "--jobs", "2"]) == 0
    model = load_model(str(path), mmap=True)
    assert not model.tensors["big"].flags.owndata and not model.tensors["big"].flags.writeable   # mapped
    assert (tmp_path / "m.nnr").read_bytes() == outcome(model.tensors, False)


def test_streaming_falls_back_when_a_qp_does_not_fit(monkeypatch):
    """The safety net: should a streamed tensor's QP not fit the qp offset after all (here: the QPs
    are taken unraised), the model is coded the planned way instead of failing on the qp offset."""
    from nnr_core.encoder.ndu import NduEncoder
    tensors = {"layer.weight": W, "big": EDGES["big_1e20"]}
    expected = outcome(tensors, False)
    monkeypatch.setattr(NduEncoder, "expected_qp", NduEncoder.tensor_qp)
    for jobs in (1, 2):
        assert nnr.encode(tensors, jobs=jobs) == expected


def test_reference_decodes_the_rebased_streams(tmp_path):
    """The reference reads nnr's streams of huge values (base QP 96 and 4095; a QP past the guard's,
    where the reference's own encoder crashes) as nnr does."""
    from tests.interop.reference import find_reference, reference_decodes
    reference, why = find_reference()
    if reference is None:
        pytest.skip(f"interop: {why}")
    cases = {"qpd2": ({"layer.weight": W, "big": EDGES["big_1e20"], "b1": EDGES["big_1e20_1d"]}, {}),
             "qpd7": ({"b": np.array([[1e20, 3e19], [1.0, -1e20]], dtype=np.float32)}, {"qp_density": 7}),
             "guard_edge": ({"w": EDGES["guard_edge"]}, {})}
    streams = {key: nnr.encode(t, **o) for key, (t, o) in cases.items()}
    for key, (kind, got) in reference_decodes(streams, tmp_path).items():
        assert kind == "decoded", got
        ours = nnr.decode(streams[key])
        assert sorted(got) == sorted(ours)
        for name in ours:
            assert np.array_equal(np.asarray(got[name], dtype=np.float32), ours[name]), name


@pytest.mark.parametrize("options", [dict(qp=4095, qp_density=0), dict(qp=200, qp_density=0),
                                     dict(qp=-4096, qp_density=0), dict(qp_per_tensor={"layer.weight": 4095})])
def test_qps_without_a_float32_step_are_named(options):
    """A QP whose step size float32 cannot hold (beyond double too, for 4095 at qp_density 0) is an
    EncoderConfigError naming the tensor on both paths (it was a SyntaxValueError, a decoder's error)."""
    tensors = {"layer.weight": W}
    planned = outcome(tensors, False, **options)
    assert outcome(tensors, True, **options) == planned
    assert planned[0] is EncoderConfigError and "tensor 'layer.weight'" in planned[1] and "step size" in planned[1]


@pytest.mark.parametrize("dq,lambda_scale", [(True, 0.0), (False, 0.0), (True, 1.0), (False, 1.0)])
def test_guarded_qp_from_the_value_range_is_the_quantizers(dq, lambda_scale):
    """guarded_qp, which the streaming path uses to choose the base QP before quantizing, gives the
    QP the quantizer returns, for maxima on both sides of the overflow guard's threshold."""
    from nnr_core.quant.quantize import guarded_qp, quantize_tcq, quantize_uniform
    rng = np.random.default_rng(3)
    threshold = step_size(-32, 2) * 2.0 ** 31                 # |w| / Delta reaches int32
    quantize = quantize_tcq if dq else quantize_uniform
    for m in np.nextafter(np.float32(threshold), np.float32(0), dtype=np.float32) * \
            np.array([0.5, 0.999999, 1.0, 1.0000001, 1.0000002, 2.0, 1e6], dtype=np.float32):
        w = (rng.normal(0, 1, 64) * 1e-3).astype(np.float32)
        w[int(rng.integers(64))] = -m if rng.random() < 0.5 else m
        expected = quantize(w, -32, 2, lambda_scale=lambda_scale)[1]
        assert guarded_qp((float(w.min()), float(w.max())), -32, 2, dq, lambda_scale) == expected


@pytest.mark.parametrize("dq", [True, False])
def test_a_maximum_at_the_guards_threshold_takes_the_next_qp(dq):
    """max|w| = 2^23 at QP -32: |w| / Delta is exactly 2^31, the guard's QP (-32 again) still
    overflows (NNCodec's CHECK fails there); nnr codes it at the next QP, -31."""
    t = {"w": EDGES["guard_edge"]}
    dec = nnr.Decoder()
    out = dec.decode(nnr.encode(t, dq=dq))
    assert [x.qp for x in dec.tensors] == [-31]
    assert np.max(np.abs(out["w"] - t["w"])) <= step_size(-31, 2)


@pytest.mark.parametrize("bitdepth", [4, 8])
def test_bitdepth_beyond_the_largest_step_is_refused_on_both_paths(bitdepth):
    """The reference clamps the bit-depth QP at 2^(5 + qp_density) - 1 and its levels saturate (1e12
    decodes as 4.7e11 at bitdepth 8); nnr refuses the tensor, by name, on either path."""
    tensors = {"layer.weight": W, "huge": np.array([[1e12, -3e11], [5.0, 0.1]], dtype=np.float32)}
    planned = outcome(tensors, False, bitdepth=bitdepth)
    assert planned[0] is EncoderConfigError and "'huge'" in planned[1] and "step size beyond" in planned[1]
    assert outcome(tensors, True, bitdepth=bitdepth) == planned
    fits = {"layer.weight": W, "big": np.array([[1e8, -3e7], [5.0, 0.1]], dtype=np.float32)}
    out = nnr.decode(outcome(fits, False, bitdepth=bitdepth))
    assert np.abs(out["big"][0, 0] - 1e8) < 0.15 * 1e8
