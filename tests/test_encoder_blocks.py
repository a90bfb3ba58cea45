"""Block coding in the encoder (NNR_PT_BLOCK, HLS §9.3, HLS §14 items 6 and 9, HLS §16.4):
the option block_id_and_param_type, the annotated example stream, interop with the reference
(byte-identical streams, both decoders agree) and incremental coding with out-of-band dimensions."""
import os

import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError, UnsupportedFeatureError
from nnr_core.syntax.constants import NNR_PT_BLOCK, NNR_PT_FLOAT, NNR_PT_INT
from tests.interop.reference import assert_same_tensors, find_reference, read_result, run_interop

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE_16_4 = os.path.join(HERE, "..", "bitstreams", "hls-examples", "16.4_block_weight_bias.nnc")
N_CASES = 32


def _ndus(bs, **dec_options):
    dec = nnr.Decoder(**dec_options)
    dec.decode(bs)
    return [u.fields for u in dec.units if u.nnr_unit_type == 5]


# -- the annotated stream of HLS §16.4 --------------------------------------------------------

def test_example_16_4_reproduced_byte_for_byte():
    data = open(EXAMPLE_16_4, "rb").read()
    dec = nnr.Decoder()
    decoded = dec.decode_tensors(data)
    assert {t.name: t.qp for t in decoded} == {"fc.bias": -75, "fc.weight": -38}
    # the decoded values are level x step size: quantizing them gives back the same levels;
    # the stream was written by nncodec.nnc.compress with its defaults (row_skipping=False)
    tensors = {"fc.weight": decoded[1].values, "fc.bias": decoded[0].values}
    option = {"block_identifier": {"fc.weight": "fc", "fc.bias": "fc"},
              "parameter_type": {"fc.weight": "weight", "fc.bias": "bias"}}
    out = nnr.encode(tensors, qp=-38, nonweight_qp=-75, dq=True, row_skipping=False,
                     block_id_and_param_type=option)
    assert out == data
    (ndu,) = _ndus(out)
    assert ndu["nnr_compressed_data_unit_payload_type"] == NNR_PT_BLOCK
    assert ndu["topology_elem_id_list"] == ["fc.weight", "fc.bias"]
    assert ndu["compressed_parameter_types"] == 8


# -- option checks ------------------------------------------------------------------------------

def _model():
    rng = np.random.default_rng(1)
    return {"fc.weight": rng.normal(0, 0.1, (4, 3)).astype(np.float32),
            "fc.b": rng.normal(0, 0.1, 4).astype(np.float32),
            "g": rng.normal(1, 0.1, 4).astype(np.float32),
            "m": rng.normal(0, 0.1, 4).astype(np.float32),
            "v": rng.uniform(0.5, 1, 4).astype(np.float32),
            "be": rng.normal(0, 0.1, 4).astype(np.float32),
            "w2": rng.normal(0, 0.1, (5, 3)).astype(np.float32),
            "x": rng.normal(0, 0.1, 5).astype(np.float32)}


def _opt(ids, types):
    return {"block_identifier": ids, "parameter_type": types}


@pytest.mark.parametrize("option,match", [
    ([], "must be a dict"),
    ({"block_identifier": {}}, "needs the key 'parameter_type'"),
    ({"block_identifier": {}, "parameter_type": {}, "x": 1}, "unknown key"),
    ({"block_identifier": [], "parameter_type": {}}, "must be a dict keyed by tensor name"),
    (_opt({}, {"x": "kernel"}), "parameter type 'kernel'"),
    (_opt({"nope": 1}, {}), "'nope', which is not a tensor"),
    (_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight"}), "'fc.b' is in block 1 but has no parameter_type"),
    (_opt({"fc.weight": 1, "w2": 1}, {"fc.weight": "weight", "w2": "bias"}), "only the weight of a block"),
    (_opt({"fc.weight": 1, "w2": 1}, {"fc.weight": "weight", "w2": "weight"}), "two tensors of type 'weight'"),
    (_opt({"fc.weight": 1, "fc.b": 1, "g": 1}, {"fc.weight": "weight", "fc.b": "bias", "g": "bias"}),
     "two tensors of type 'bias'"),
    (_opt({"fc.weight": 1, "x": 1}, {"fc.weight": "weight", "x": "bias"}), "share the first dimension"),
    (_opt({"fc.b": 1, "g": 1}, {"fc.b": "bias", "g": "bn.gamma"}), "has no tensor of type 'weight'"),
    (_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight", "fc.b": "unspecified"}), "type 'unspecified'"),
    (_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight", "fc.b": "weight.ls"}), "fc.weight_scaling"),
    (_opt({"fc.weight": 1, "g": 1, "m": 1}, {"fc.weight": "weight", "g": "bn.gamma", "m": "bn.mean"}),
     "all four"),
])
def test_bad_block_options(option, match):
    with pytest.raises(EncoderConfigError, match=match):
        nnr.encode(_model(), block_id_and_param_type=option)


def test_names_the_reference_would_take_by_name_are_rejected():
    t = _model()
    t["fc.weight.bias"] = t.pop("x")[:4]
    with pytest.raises(EncoderConfigError, match="'fc.weight.bias' would be taken as the block's bias"):
        nnr.encode(t, block_id_and_param_type=_opt({"fc.weight": 1, "g": 1, "m": 1, "v": 1, "be": 1},
                                                   {"fc.weight": "weight", "g": "bn.gamma", "m": "bn.mean",
                                                    "v": "bn.var", "be": "bn.beta"}))
    t = _model()
    t["fc.weight_scaling"] = t.pop("x")[:4]
    with pytest.raises(EncoderConfigError, match="'fc.weight_scaling' would be taken as the block's local-scaling"):
        nnr.encode(t, block_id_and_param_type=_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight", "fc.b": "bias"}))
    t = _model()
    t["fc.weight_G"] = t["fc.weight"][:, :2].copy()
    with pytest.raises(EncoderConfigError, match="decomposition"):
        nnr.encode(t, block_id_and_param_type=_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight", "fc.b": "bias"}))
    with pytest.raises(EncoderConfigError, match="RAW_FLOAT"):
        nnr.encode(_model(), raw_float=("fc.b",),
                   block_id_and_param_type=_opt({"fc.weight": 1, "fc.b": 1}, {"fc.weight": "weight", "fc.b": "bias"}))
    with pytest.raises(EncoderConfigError, match="block_id_and_param_type"):
        nnr.Encoder(block_id_and_param_type="fc")


def test_parameter_types_choose_the_qp_and_lone_members_are_plain_tensors():
    t = _model()
    opt = _opt({"fc.weight": "a", "w2": None}, {"w2": "bias", "x": "weight", "fc.weight": "weight"})
    out = nnr.encode(t, qp=-30, nonweight_qp=-70, block_id_and_param_type=opt)
    dec = nnr.Decoder()
    qps = {d.name: d.qp for d in dec.decode_tensors(out)}
    assert qps["w2"] == -70 and qps["x"] == -30 and qps["fc.weight"] == -30 and qps["g"] == -70
    assert all(f["nnr_compressed_data_unit_payload_type"] != NNR_PT_BLOCK for f in _ndus(out))


def test_block_order_and_separate_members():
    t = _model()
    t["idx"] = np.arange(5, dtype=np.int32)
    order = ["g", "fc.b", "w2", "fc.weight", "be", "m", "v", "x", "idx"]
    t = {k: t[k] for k in order}
    blocks = {"fc.weight": "L", "fc.b": "L", "g": "L", "m": "L", "v": "L", "be": "L", "w2": 7, "idx": 7}
    types = {"fc.weight": "weight", "fc.b": "bias", "g": "bn.gamma", "m": "bn.mean", "v": "bn.var", "be": "bn.beta",
             "w2": "weight", "idx": "bias"}
    progress = []
    out = nnr.Encoder(block_id_and_param_type=_opt(blocks, types)).encode(
        t, incremental=False, progress=lambda *a: progress.append(a[:3]))
    ndus = _ndus(out)
    # the block at the position of its weight; the w2 block has an integer bias: separate units,
    # bias first, each with the block's compressed_parameter_types
    assert [f.get("topology_elem_id", f.get("topology_elem_id_list")) for f in ndus] == [
        "idx", "w2", ["fc.weight", "be", "g", "m", "v", "fc.b"], "x"]
    assert [f["nnr_compressed_data_unit_payload_type"] for f in ndus] == [NNR_PT_INT, NNR_PT_FLOAT, NNR_PT_BLOCK,
                                                                          NNR_PT_FLOAT]
    assert [f["compressed_parameter_types"] for f in ndus] == [8, 8, 12, 0]
    assert [f["parameter_id"] for f in ndus] == [8, 2, 3, 7]
    assert list(nnr.decode(out)) == ["idx", "w2", "fc.b", "be", "g", "m", "v", "fc.weight", "x"]
    assert [p[0] for p in progress] == list(range(1, 10)) and {p[2] for p in progress} == set(t)


# -- interop with the reference -------------------------------------------------------------------

def random_block_case(seed):
    rng = np.random.default_rng(1000 + seed)
    tensors, ids, types = {}, {}, {}
    flavour = seed % 8          # make sure every feature shows up
    for i in range(int(rng.integers(1, 4))):
        # rows >= 2: the reference's writer crashes on a 2-D tensor of one row with scan_order > 0
        rows = int(rng.integers(2, 40))
        shape = (rows, int(rng.integers(2, 6)), 3, 3) if rng.random() < 0.5 else (rows, int(rng.integers(2, 50)))
        bid = f"layer{i}" if rng.random() < 0.7 else i
        w = f"l{i}.weight"
        layer = {w: ("weight", rng.normal(0, 0.1, shape))}
        if rng.random() < 0.7 or flavour in (0, 1):
            layer[f"l{i}.bias"] = ("bias", rng.normal(0, 0.05, rows))
        if rng.random() < 0.4 or flavour == 2:
            layer[f"bn{i}.running_mean"] = ("bn.mean", rng.normal(0, 0.2, rows))
            layer[f"bn{i}.running_var"] = ("bn.var", rng.uniform(0.3, 2.0, rows))
            layer[f"bn{i}.weight"] = ("bn.gamma", rng.normal(1, 0.2, rows))
            layer[f"bn{i}.bias"] = ("bn.beta", rng.normal(0, 0.2, rows))
        if rng.random() < 0.3 or flavour == 3:
            layer[w + "_scaling"] = ("weight.ls", rng.normal(1, 0.1, rows))
        if len(layer) == 1:
            layer[f"l{i}.bias"] = ("bias", rng.normal(0, 0.05, rows))
        names = list(layer)
        if rng.random() < 0.3:
            rng.shuffle(names)        # members before their weight
        for n in names:
            ptype, data = layer[n]
            data = data.astype(np.float32)
            if data.ndim > 1 and rng.random() < 0.2:
                data[: max(1, rows // 3)] = 0        # zero rows for row skipping
            if (flavour == 0 and i == 0 and ptype == "bias") or (ptype != "weight" and rng.random() < 0.05):
                data = rng.integers(-50, 50, size=data.shape).astype(np.int32)
            if flavour == 7 and ptype == "weight":        # few distinct values: a codebook pays off
                data = (rng.integers(-3, 4, size=data.shape) * 0.02).astype(np.float32)
            if flavour == 4 and i == 0 and ptype == "weight":
                data = rng.integers(-9, 9, size=data.shape).astype(np.int32)
            tensors[n] = data
            ids[n] = bid
            types[n] = ptype
        if rng.random() < 0.4:
            other = f"extra{i}"
            tensors[other] = rng.normal(0, 0.1, (rows,) if rng.random() < 0.5 else (rows, 7)).astype(np.float32)
            types[other] = str(rng.choice(["unspecified", "bias", "weight"]))
            ids[other] = None
    opts = dict(qp=int(rng.choice([-24, -32, -38, -44])), qp_density=int(rng.choice([1, 2, 3])),
                nonweight_qp=int(rng.choice([-60, -75])), dq=bool(rng.random() < 0.6) or flavour == 5,
                codebook=bool(rng.random() < 0.25) or flavour in (5, 6), scan_order=int(rng.integers(0, 5)),
                row_skipping=bool(rng.random() < 0.6), param_opt=bool(rng.random() < 0.8),
                cabac_unary_length_minus1=int(rng.choice([0, 3, 10, 14])),
                block_id_and_param_type={"block_identifier": ids, "parameter_type": types})
    if flavour in (6, 7):
        opts["dq"] = False
    if flavour == 7:
        opts["codebook"] = True
    if opts["qp_density"] == 1:
        opts["nonweight_qp"] = -60     # -75 does not fit a 7-bit qp offset (the reference would wrap it)
    return tensors, opts


def reference_options(o):
    return dict(qp=o["qp"], qp_density=o["qp_density"], nonweight_qp=o["nonweight_qp"], use_dq=o["dq"],
                codebook_mode=2 if o["codebook"] else 0, scan_order=o["scan_order"],
                row_skipping=o["row_skipping"], param_opt=o["param_opt"],
                cabac_unary_length_minus1=o["cabac_unary_length_minus1"],
                block_id_and_param_type=o["block_id_and_param_type"])


REFERENCE, WHY = find_reference()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")


@pytest.fixture(scope="module")
def interop_run(tmp_path_factory):
    jobs = tmp_path_factory.mktemp("nncodec-block-jobs")
    return jobs, run_interop(jobs, random_block_case, N_CASES, reference_options)


@needs_reference
@pytest.mark.parametrize("seed", range(N_CASES))
def test_block_streams_match_the_reference(interop_run, seed):
    jobs, cases = interop_run
    tensors, opts, nnr_bs = cases[seed]
    kind, ref_bs = read_result(str(jobs / f"{seed:03d}-ref-encode"))
    assert kind == "bitstream", f"the reference failed to encode: {ref_bs}"
    assert nnr_bs == ref_bs, f"encoder output differs from the reference ({opts})"
    kind, ref_out = read_result(str(jobs / f"{seed:03d}-ref-decodes-ref"))
    assert kind == "decoded", ref_out
    assert_same_tensors(nnr.decode(ref_bs), ref_out)
    kind, ref_out_nnr = read_result(str(jobs / f"{seed:03d}-ref-decodes-nnr"))
    assert kind == "decoded", f"the reference failed on nnr's bitstream:\n{ref_out_nnr}"
    assert_same_tensors(nnr.decode(nnr_bs), ref_out_nnr)


@needs_reference
def test_interop_cases_cover_blocks_and_separate_members(interop_run):
    _, cases = interop_run
    kinds = set()
    for tensors, opts, bs in cases.values():
        for f in _ndus(bs):
            pt, cpt = f["nnr_compressed_data_unit_payload_type"], f["compressed_parameter_types"]
            kinds.add(("block", cpt) if pt == NNR_PT_BLOCK else ("separate", pt) if cpt else ("plain", pt))
            if pt == NNR_PT_BLOCK:
                kinds.add(("block-dq", f["dq_flag"]))
                kinds.add(("block-codebook", f["codebook_present_flag"]))
                kinds.add(("block-entry-points", bool(f.get("BitOffsetDelta"))))
    for need in [("block", 8), ("block", 12), ("block", 2), ("separate", NNR_PT_INT), ("separate", NNR_PT_FLOAT),
                 ("block-dq", 0), ("block-dq", 1), ("block-codebook", 1), ("block-entry-points", True)]:
        assert need in kinds, need


# -- decoder round trip and incremental coding ----------------------------------------------------

@pytest.mark.parametrize("seed", range(0, N_CASES, 3))
def test_block_streams_round_trip(seed):
    tensors, opts = random_block_case(seed)
    bs = nnr.encode(tensors, **opts)
    out = nnr.decode(bs)
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        assert out[k].shape == v.shape
        if v.dtype == np.int32:
            assert np.array_equal(out[k], v)
        else:
            assert np.max(np.abs(out[k] - v)) < 0.2


def test_incremental_blocks_need_dimensions_out_of_band():
    rng = np.random.default_rng(5)
    shapes = {"c.weight": (6, 2, 3, 3), "c.bias": (6,), "bn.gamma": (6,), "bn.beta": (6,), "bn.mean": (6,),
              "bn.var": (6,), "fc.weight": (3, 10), "fc.bias": (3,), "head": (4, 4)}
    ids = {"c.weight": "c", "c.bias": "c", "bn.gamma": "c", "bn.beta": "c", "bn.mean": "c", "bn.var": "c",
           "fc.weight": "fc", "fc.bias": "fc"}
    types = {"c.weight": "weight", "c.bias": "bias", "bn.gamma": "bn.gamma", "bn.beta": "bn.beta",
             "bn.mean": "bn.mean", "bn.var": "bn.var", "fc.weight": "weight", "fc.bias": "bias"}
    option = _opt(ids, types)
    enc = nnr.Encoder(qp=-36, block_id_and_param_type=option, codebook=False)
    dec = nnr.Decoder(out_of_band=shapes)
    base = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in shapes.items()}
    dec.decode(enc.encode(base, incremental=False))
    for step in range(3):
        update = {k: rng.normal(0, 0.02, s).astype(np.float32) for k, s in shapes.items()}
        if step == 1:
            update["fc.weight"][:] = 0
            update["fc.bias"][:] = 0          # the whole fc block quantizes to zero: omitted
        if step == 2:
            update["fc.bias"] = update["fc.bias"].astype(np.int32)   # an integer member: separate units
            update["fc.bias"][0] = 3
        bs = enc.encode(update, incremental=True, tca=True, hdsp=step > 0)
        with pytest.raises(UnsupportedFeatureError, match="out of band"):
            nnr.Decoder().decode(bs)
        out = dec.decode(bs)
        ndus = [u.fields for u in dec.units if u.nnr_unit_type == 5]
        for f in ndus:
            block_related = bool(f["compressed_parameter_types"])
            assert f["tensor_dimensions_flag"] == (0 if block_related else 1)
            assert f["parent_node_id_present_flag"] == 1
        kinds = [f["nnr_compressed_data_unit_payload_type"] for f in ndus]
        if step == 1:
            assert kinds == [NNR_PT_BLOCK, NNR_PT_FLOAT]
        elif step == 2:
            assert kinds == [NNR_PT_BLOCK, NNR_PT_INT, NNR_PT_FLOAT, NNR_PT_FLOAT]
            # fc.bias now has its own parameter_id, not the block's: no TCA (NNCodec would crash)
            assert [f["temporal_context_modeling_flag"] for f in ndus[1:3]] == [0, 1]
            assert [f["parameter_id"] for f in ndus[1:3]] == [7, 6]
        else:
            assert kinds == [NNR_PT_BLOCK, NNR_PT_BLOCK, NNR_PT_FLOAT]
        if step > 0:
            assert ndus[0]["temporal_context_modeling_flag"] == 1
        for k, v in out.items():
            if v.dtype == np.int32:
                assert np.array_equal(v, update[k])
            else:
                assert np.max(np.abs(v - update[k])) < 0.05, k
        if step == 1:     # the decoder reports the omitted block as a zero update
            assert {t.name for t in dec.tensors if getattr(t, "omitted", False)} <= {"fc.weight", "fc.bias"}
            assert not np.any(out.get("fc.weight", 0)) and not np.any(out.get("fc.bias", 0))
        # the encoder's state is the decoder's: TCA references, depths, parameter ids
        assert set(enc.state.tensors) == set(dec.state.tensors)
        for k, h in enc.state.tensors.items():
            d = dec.state.tensors[k]
            assert np.array_equal(h.levels, d.levels) and h.depth == d.depth and h.parameter_id == d.parameter_id, k
