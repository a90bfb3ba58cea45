"""The streams nnr writes for the conformance suite: a deterministic list of cases.

Each case builds its bitstream(s) from seeded tensors with ``nnr.encode`` / ``nnr.Encoder``
("nnr" cases), rewrites encoder output unit by unit or writes units from the syntax tables
("hand-built": syntax nnr's encoder does not write), or damages a valid stream ("derived":
must-reject streams). Nothing here depends on the clock, the machine or the order cases run in.
"""
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import nnr
from nnr.conformance.streams import assemble, find, gauss, rebuild, sparse_rows, units_of
from nnr_core.syntax.constants import NNR_LPS, NNR_MPS, NNR_NDU, NNR_STR, NNR_TPL


NNR = f"nnr {nnr.__version__}"


@dataclass
class Case:
    id: str
    description: str
    build: Callable[[], list]            # -> [bytes] (one per step)
    kind: str = "stream"
    expect: str = "decode"
    error_class: Optional[str] = None
    encoder: str = NNR
    config: dict = field(default_factory=dict)
    tags: list = field(default_factory=list)
    derived_from: Optional[str] = None
    decoder_options: dict = field(default_factory=dict)


CASES = []
_BUILT = {}


def case(id, description, build, **kw):
    c = Case(id, description, build, **kw)
    if "sequence" != c.kind and kw.get("kind") is None:
        c.kind = "stream"
    CASES.append(c)
    return c


def built(case_id):
    """The steps of an earlier case (built once)."""
    if case_id not in _BUILT:
        _BUILT[case_id] = next(c for c in CASES if c.id == case_id).build()
    return _BUILT[case_id]


def enc(tensors, **opts):
    return lambda: [nnr.encode(tensors() if callable(tensors) else tensors, **opts)]


def plain(name, description, tensors, tags=(), **opts):
    """An nnr-encoded single bitstream."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    return case(f"nnr/{name}", description, enc(tensors, **opts), config=cfg, tags=list(tags),
                decoder_options={"profile0_variant": "nncodec2"} if opts.get("profile0_variant") == "nncodec2" else {})


def cbvals(seed, shape):
    """Values from a six-entry set: the encoder chooses codebook reconstruction for them."""
    return np.random.RandomState(seed).choice(np.array([-0.3, -0.1, 0, 0.1, 0.2, 0.5], np.float32), shape)


W = gauss(1, (16, 24))                  # a small fully connected weight
B = gauss(2, (16,), 0.02)
TALL = gauss(3, (136, 6))               # >64 rows: entry points for every scan order
TALL_SPARSE = sparse_rows(4, (136, 6))


def small_model():
    return {"conv.weight": gauss(10, (8, 3, 3, 3)), "conv.bias": gauss(11, (8,), 0.02),
            "bn.weight": 1 + gauss(12, (8,), 0.1), "bn.bias": gauss(13, (8,), 0.02),
            "fc.weight": gauss(14, (10, 8)), "fc.bias": gauss(15, (10,), 0.02),
            "emb.idx": np.arange(-6, 6, dtype=np.int32).reshape(3, 4)}


# -- profiles and payload types ----------------------------------------------------------------
plain("p1_float", "general_profile_idc 1, one NNR_PT_FLOAT weight, encoder defaults (qp -32, DQ)",
      {"w": W}, ["default"])
plain("p0_nncodec1", "general_profile_idc 0 (edition 1) as NNCodec 1.x writes it", {"w": W, "b": B},
      general_profile_idc=0)
plain("p0_nncodec2", "general_profile_idc 0 written the NNCodec 2.x way (decoder_options profile0_variant "
      "nncodec2)", {"w": W, "b": B}, general_profile_idc=0, profile0_variant="nncodec2")
plain("p0_nodq_scan2", "edition 1, DQ off, scan order 2 with entry points", {"w": TALL},
      general_profile_idc=0, dq=False, scan_order=2)
plain("int_int32_2d", "NNR_PT_INT: int32 (6,10) lossless", {"i": np.arange(-30, 30, dtype=np.int32).reshape(6, 10)},
      ["integer"])
plain("int_int8_1d", "NNR_PT_INT: int8 (40,) sparse, lossless (decodes as int32)",
      {"i": (np.random.RandomState(5).randint(-3, 4, 40) * (np.arange(40) % 3 == 0)).astype(np.int8)}, ["integer"])
plain("int_uint8_4d", "NNR_PT_INT: uint8 (2,3,4,5) 0..255", {"i": np.random.RandomState(6).randint(0, 256, (2, 3, 4, 5)).astype(np.uint8)},
      ["integer"])
plain("int_large_values", "NNR_PT_INT with values up to +-2^30 (long remainders)",
      {"i": np.array([[2**30, -2**30, 7], [0, 1, -(2**29) + 3]], dtype=np.int32)}, ["integer"])
plain("raw_float_one", "NNR_PT_RAW_FLOAT bias next to a coded weight", {"w": W, "b": B}, ["raw_float"], raw_float=("b",))
plain("raw_float_2d", "NNR_PT_RAW_FLOAT 2-D tensor only", {"r": gauss(7, (3, 5))}, ["raw_float"], raw_float=("r",))


def _block(types, dq=True, **kw):
    names = {"weight": "l.weight", "bias": "l.bias", "weight.ls": "l.weight_scaling", "bn.beta": "bn.beta",
             "bn.gamma": "bn.gamma", "bn.mean": "bn.mean", "bn.var": "bn.var"}
    t = {"l.weight": gauss(20, (12, 10))}
    for ty in types:
        n = names[ty]
        t[n] = (np.abs(gauss(21 + len(t), (12,), 0.5)) + 0.5) if ty in ("bn.var", "bn.gamma") else gauss(21 + len(t), (12,), 0.05)
    opt = {"block_identifier": {n: "l" for n in t}, "parameter_type": {"l.weight": "weight", **{names[ty]: ty for ty in types}}}
    return t, opt


for name, types, desc in [("block_w_bias", ["bias"], "weight + bias"),
                          ("block_w_ls", ["weight.ls"], "weight + weight scaling (LS)"),
                          ("block_w_bn", ["bn.beta", "bn.gamma", "bn.mean", "bn.var"], "weight + batch norm (BN)"),
                          ("block_all", ["weight.ls", "bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var"],
                           "weight + LS + BN + bias (every member type)")]:
    t, opt = _block(types)
    plain(name, f"NNR_PT_BLOCK: {desc} in one unit", t, ["block"], block_id_and_param_type=opt)
t, opt = _block(["bias"])
plain("block_w_bias_scan1", "NNR_PT_BLOCK weight + bias with scan order 1 (entry points of the weight)", t, ["block"],
      block_id_and_param_type=opt, scan_order=1)
t, opt = _block(["bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var"])
plain("block_codebook_split", "block members coded in separate units (codebook weight, members carry "
      "compressed_parameter_types)", t, ["block"], block_id_and_param_type=opt, codebook=True, dq=False)

# -- quantization -------------------------------------------------------------------------------
for qp, dq in [(-16, False), (-24, True), (-40, False), (-48, True), (-56, False)]:
    plain(f"uniform_qp{qp}_{'dq' if dq else 'nodq'}", f"uniform reconstruction, qp {qp}, DQ {'on' if dq else 'off'}",
          {"w": W}, ["uniform"], qp=qp, dq=dq)
plain("uniform_rate_lambda", "uniform quantization with a rate term (lambda_scale 0.5)", {"w": W}, ["uniform"],
      dq=False, lambda_scale=0.5)
plain("dq_lambda", "dependent quantization (8-state trellis) with lambda_scale 1.0", {"w": W}, ["dq"], lambda_scale=1.0)
plain("codebook_nodq", "codebook reconstruction (float64 output), DQ off", {"w": cbvals(30, (16, 16))},
      ["codebook"], codebook=True, dq=False)
plain("codebook_dq_requested", "codebook with DQ requested (the encoder turns DQ off)", {"w": cbvals(31, (16, 16))},
      ["codebook"], codebook=True)
plain("codebook_multi", "codebook on weight and bias (two codebook() structures)",
      {"w": cbvals(32, (12, 8)), "b": cbvals(33, (12,))}, ["codebook"], codebook=True, dq=False)
for bd, dq in [(2, True), (4, False), (8, True), (16, False)]:
    plain(f"bitdepth{bd}_{'dq' if dq else 'nodq'}", f"integer-aligned bit depth {bd}, DQ {'on' if dq else 'off'}",
          {"w": W}, ["bitdepth"], bitdepth=bd, dq=dq)
plain("bitdepth4_unsigned", "bit depth 4 on non-negative data (unsigned range)", {"w": np.abs(W)}, ["bitdepth"], bitdepth=4)
for d in range(8):
    qp = -8 * (1 << d) // 2 - 6 * (1 << d) // 2
    plain(f"qp_density{d}", f"qp_density {d} (mps_qp_density), qp {qp}", {"w": W, "b": B}, [f"qp_density:{d}"],
          qp_density=d, qp=qp, nonweight_qp=qp - (1 << d))
plain("qp_min", "qp -4096 with qp_density 7: the smallest QP the syntax carries", {"w": W * 1e-8}, ["qp:min"],
      qp=-4096, qp_density=7, nonweight_qp=-4096)
plain("qp_max", "qp 4095 with qp_density 7: the largest QP (every level 0)", {"w": W}, ["qp:max"],
      qp=4095, qp_density=7, nonweight_qp=4095)
plain("qp_rebased", "QPs that do not fit the qp offset around 0: mps_quantization_parameter rebased",
      {"w": W, "b": B}, ["qp:rebased"], qp=-20, nonweight_qp=-90, qp_density=1)
plain("qp_per_tensor", "qp_per_tensor: a different QP per tensor", {"a": W, "b": gauss(8, (8, 8)), "c": B},
      ["qp_per_tensor"], qp_per_tensor={"a": -30, "b": -44, "c": -60})

# -- scan orders, entry points, row skipping, context parameters ---------------------------------
for so in range(1, 5):
    for dq in (True, False):
        plain(f"scan{so}_{'dq' if dq else 'nodq'}", f"scan order {so} ({[8, 16, 32, 64][so - 1]}-row blocks) with entry "
              f"points{' and dq states' if dq else ''}", {"w": TALL}, ["entry_points"], scan_order=so, dq=dq)
# the number of block rows at its edges: 2 BlockDim - 1, 2 BlockDim (exactly) and 2 BlockDim + 1 rows
for so in range(1, 5):
    dim = 4 << so
    for i, d in enumerate((-1, 0, 1)):
        rows, points = 2 * dim + d, "2 entry points" if d > 0 else "1 entry point"
        plain(f"blockrows_scan{so}_{rows}", f"scan order {so} on {rows} rows (2 x {dim}{['', ' + 1', ' - 1'][d]}): "
              f"{2 + (d > 0)} block rows, {points}", {"w": gauss(200 + 10 * so + i, (rows, 3))},
              ["entry_points", "block_rows"], scan_order=so)
    plain(f"blockrows_scan{so}_{2 * dim}_nodq", f"scan order {so} on {2 * dim} rows (2 x {dim}), DQ off: 2 block rows, "
          "1 entry point", {"w": gauss(200 + 10 * so + 3, (2 * dim, 3))}, ["entry_points", "block_rows"],
          scan_order=so, dq=False)
plain("scan2_rowskip", "scan order 2, row skipping on a tensor with zero rows", {"w": TALL_SPARSE}, ["row_skip"], scan_order=2)
plain("scan4_rowskip_nodq", "scan order 4, row skipping, DQ off", {"w": TALL_SPARSE}, ["row_skip"], scan_order=4, dq=False)
plain("scan3_4d", "scan order 3 on a 4-D tensor (rows = first dimension)", {"w": gauss(40, (70, 2, 2, 2))}, scan_order=3)
plain("scan1_rowwidth1", "scan order 1 requested on a (20,1) tensor: coded as scan order 0", {"w": gauss(41, (20, 1))},
      scan_order=1)
plain("rowskip_on", "row skipping on (zero rows signalled in row_skip_list)", {"w": sparse_rows(42, (24, 12))}, ["row_skip"])
plain("rowskip_off", "row skipping off on the same tensor", {"w": sparse_rows(42, (24, 12))}, row_skipping=False)
plain("param_opt_off", "param_opt off (default context parameters)", {"w": W}, ["param_opt:off"], param_opt=False)
plain("param_opt_off_nodq", "param_opt off, DQ off", {"w": W}, ["param_opt:off"], param_opt=False, dq=False)
for n in (0, 1, 4, 9, 15, 31):
    plain(f"cabac_unary_length{n}", f"cabac_unary_length_minus1 {n}", {"w": W * 4}, [f"cabac_unary_length_minus1:{n}"],
          cabac_unary_length_minus1=n)

# -- shapes and special tensors --------------------------------------------------------------------
for nd, shape in [(1, (50,)), (3, (4, 5, 6)), (4, (4, 3, 2, 5)), (5, (2, 3, 2, 2, 3)), (6, (2, 2, 3, 1, 2, 3))]:
    plain(f"shape_{nd}d", f"{nd}-D tensor {shape}", {"t": gauss(50 + nd, shape)}, [f"dims:{nd}"], qp_per_tensor={"t": -32})
plain("single_1d", "a single element, shape (1,)", {"s": np.array([0.7], np.float32)}, ["single_element"])
plain("single_6d", "a single element, shape (1,1,1,1,1,1)", {"s": np.full((1,) * 6, -0.3, np.float32)}, ["single_element"])
plain("allzero_1d", "all-zero (30,) tensor", {"z": np.zeros(30, np.float32)}, ["all_zero"])
plain("allzero_4d_rowskip", "all-zero (4,3,3,3) tensor, row skipping on", {"z": np.zeros((4, 3, 3, 3), np.float32)}, ["all_zero"])
plain("allzero_int", "all-zero int32 tensor (NNR_PT_INT)", {"z": np.zeros((5, 5), np.int32)}, ["all_zero", "integer"])
plain("constant_pos", "constant 0.25 (8,8)", {"c": np.full((8, 8), 0.25, np.float32)}, ["constant"])
plain("constant_neg_nodq", "constant -1.5 (6,7), DQ off", {"c": np.full((6, 7), -1.5, np.float32)}, ["constant"], dq=False)
plain("one_row", "a single row (1,70)", {"r": gauss(60, (1, 70))})
plain("float16_input", "float16 input coded as float", {"h": gauss(61, (8, 8)).astype(np.float16)})
plain("multi_tensor", "a 7-tensor model: conv/bn/fc floats and an int32 tensor", small_model, ["multi_tensor"])
plain("multi_pytorch", "the same model with framework pytorch (NNR_TPL_PYT, PyTorch QP rules)", small_model,
      ["multi_tensor"], framework="pytorch")
plain("multi_nodq_scan1", "the model with DQ off and scan order 1", small_model, ["multi_tensor"], dq=False, scan_order=1)
case("nnr/topology_data", "NNR_TPL carrying topology_data (nnr_encode's file metadata JSON)",
     lambda: [nnr.Encoder().encode({"w": W}, incremental=False,
                                   topology_data='{"nnr_file_meta":{"tensors":{},"extra":{},"order":["w"]}}')],
     config={"topology_data": "nnr_file_meta"}, tags=["tpl:data"])


# -- incremental sequences -------------------------------------------------------------------------
def updates(seed, n, shape, scale=0.02, keep=None, density=0.4):
    rng = np.random.RandomState(seed)
    base = (rng.randn(*shape) * 0.05).astype(np.float32)
    mask = rng.rand(*shape) < density
    if keep == "sparse":            # a sparse base and updates on the same positions (HDSP pays off)
        base = base * mask
    out = [base]
    for _ in range(n):
        u = (rng.randn(*shape) * scale).astype(np.float32)
        out.append(u * mask if keep in ("mask", "sparse") else u)
    return out


def sequence(name, description, steps, tags=(), enc_opts=None, tca=True, hdsp=False, decoder_options=None):
    opts = enc_opts or {}

    def build():
        e = nnr.Encoder(**opts)
        return [e.encode(s() if callable(s) else s, tca=tca, hdsp=hdsp) for s in steps]
    cfg = dict(opts, tca=tca, hdsp=hdsp, steps=len(steps), incremental=True)
    return case(f"nnr/{name}", description, build, kind="sequence", config=cfg, tags=["incremental", *tags],
                decoder_options=decoder_options or {})


u = updates(70, 3, (16, 24), keep="mask")
sequence("inc_tca", "base + 3 masked updates with TCA (temporal context modelling)", [{"w": x} for x in u], ["tca"])
sequence("inc_notca", "base + 3 updates, TCA off", [{"w": x} for x in u], tca=False)
us = updates(75, 3, (16, 24), keep="sparse", density=0.15)
sequence("inc_hdsp", "sparse base + 3 updates with HDSP (history-dependent significance)", [{"w": x} for x in us], ["hdsp"],
         tca=False, hdsp=True)
sequence("inc_tca_hdsp", "sparse base + 3 updates with TCA and HDSP", [{"w": x} for x in us], ["tca", "hdsp"], hdsp=True)
sequence("inc_tca_nodq", "TCA updates with DQ off", [{"w": x} for x in u], ["tca"], enc_opts={"dq": False})
sequence("inc_scan2", "TCA updates with scan order 2 (entry points in every step)",
         [{"w": x} for x in updates(71, 2, (40, 8), keep="mask")], ["tca"], enc_opts={"scan_order": 2})
u2 = updates(72, 2, (10, 12))
sequence("inc_omitted", "two tensors; the second update of 'b' is all zero and left out (decodes as zeros)",
         [{"a": u2[0], "b": B}, {"a": u2[1], "b": B * 0.5}, {"a": u2[2], "b": np.zeros_like(B)}], ["omitted"])
sequence("inc_omitted_all", "an update in which every tensor is zero: no NDU at all",
         [{"a": u2[0]}, {"a": np.zeros_like(u2[0])}, {"a": u2[1]}], ["omitted"])
sequence("inc_codebook", "incremental updates with codebook quantization",
         [{"w": cbvals(73 + k, (12, 12))} for k in range(3)], ["codebook"], enc_opts={"codebook": True, "dq": False})
sequence("inc_int", "incremental NNR_PT_INT updates",
         [{"i": np.random.RandomState(74 + k).randint(-5, 6, (6, 6)).astype(np.int32)} for k in range(3)], ["integer"])
sequence("inc_multi_device", "updates of a small model with device_id 3",
         [small_model(), {k: (v * 0.1).astype(v.dtype) if v.dtype == np.float32 else v for k, v in small_model().items()}],
         ["multi_tensor"], enc_opts={"device_id": 3})
t, opt = _block(["bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var"])
sequence("inc_block", "incremental NNR_PT_BLOCK: dimensions out of band (tensor_dimensions_flag 0)",
         [t, {k: v * 0.5 for k, v in t.items()}], ["block"], enc_opts={"block_id_and_param_type": opt},
         decoder_options={"out_of_band": {k: list(v.shape) for k, v in t.items()}})


# -- hand-built: syntax nnr's encoder does not write -------------------------------------------------
def hand(name, description, build, tags=(), base=None, **kw):
    cfg = {"built_from": base} if base else {}
    return case(f"nnr/{name}", description, build, encoder="hand-built", config=cfg, tags=list(tags), **kw)


def edited(base_id, edit, step=None):
    """Steps of ``base_id`` with ``edit(units, k)`` applied to step k (all steps if step is None)."""
    def build():
        out = []
        for k, data in enumerate(built(base_id)):
            out.append(rebuild(data, lambda units: edit(units, k)) if step in (None, k) else data)
        return out
    return build


def _ndus(units):
    return [u for u in units if u[0] == NNR_NDU]


def _long(units, k):
    for u in units:
        u[1]["nnr_unit_size_flag"] = 1


def _pdc(units, k):
    for n, u in enumerate(units):
        if u[0] != NNR_NDU:
            u[1].update(partial_data_counter_present_flag=1, partial_data_counter=17 * n)


def _ddf(units, k):
    for u in _ndus(units):
        u[1].update(nnr_decompressed_data_format_present_flag=1, nnr_decompressed_data_format=1)


def _cul_inferred(units, k):
    for u in _ndus(units):
        u[1]["cabac_unary_length_flag"] = 0
        u[1].pop("cabac_unary_length_minus1")


def _no_input_params(units, k):
    for u in _ndus(units):
        f = u[1]
        f["input_parameters_present_flag"] = 0     # the dimensions stay in fields: the writer's out-of-band values
        for key in ("tensor_dimensions_flag", "cabac_unary_length_flag", "compressed_parameter_types",
                    "cabac_unary_length_minus1"):
            f.pop(key, None)


def _dims_oob(units, k):
    for u in _ndus(units):
        u[1]["tensor_dimensions_flag"] = 0           # dimensions kept as the writer's out-of-band values


def _no_node_id(units, k):
    for u in _ndus(units):
        u[1]["node_id_present_flag"] = 0
        for key in ("device_id", "parameter_id", "put_node_depth"):
            u[1].pop(key, None)


def _not_independent(units, k):
    for u in units[1:]:
        u[1]["independently_decodable_flag"] = 0


hand("long_size_form", "every unit with the long (31-bit) nnr_unit_size form", edited("nnr/multi_tensor", _long),
     ["unit_size:long"], base="nnr/multi_tensor")
hand("long_size_sequence", "an incremental sequence whose units use the long size form", edited("nnr/inc_tca", _long),
     ["unit_size:long", "incremental"], base="nnr/inc_tca", kind="sequence")
hand("partial_data_counter", "STR, MPS and TPL units with partial_data_counter", edited("nnr/p1_float", _pdc),
     base="nnr/p1_float")
hand("decompressed_data_format", "NDUs with nnr_decompressed_data_format present", edited("nnr/multi_tensor", _ddf),
     base="nnr/multi_tensor")
hand("not_independently_decodable", "units after STR with independently_decodable_flag 0",
     edited("nnr/p1_float", _not_independent), base="nnr/p1_float")
hand("cabac_unary_length_inferred", "cabac_unary_length_flag 0: cabac_unary_length_minus1 inferred as 9",
     edited("nnr/cabac_unary_length9", _cul_inferred), base="nnr/cabac_unary_length9")
hand("input_parameters_absent", "input_parameters_present_flag 0: dimensions out of band "
     "(decoder_options out_of_band), unary length inferred", edited("nnr/cabac_unary_length9", _no_input_params),
     base="nnr/cabac_unary_length9", decoder_options={"out_of_band": {"w": [16, 24]}})
hand("dims_out_of_band", "tensor_dimensions_flag 0 with a cabac_unary_length: dimensions out of band",
     edited("nnr/scan2_dq", _dims_oob), base="nnr/scan2_dq", decoder_options={"out_of_band": {"w": [136, 6]}})
hand("node_id_absent", "profile 1 NDUs without node identification (node_id_present_flag 0)",
     edited("nnr/multi_tensor", _no_node_id), base="nnr/multi_tensor")


def _parent(ptype, drop_node_id):
    def edit(units, k):
        if k == 0:
            return
        parent = units_of(built("nnr/inc_notca")[k - 1])
        for n, u in enumerate(_ndus(units)):
            f = u[1]
            if not f.get("parent_node_id_present_flag"):
                continue
            for key in ("parent_device_id", "parent_node_payload_sha256", "parent_node_payload_sha512"):
                f.pop(key, None)
            f["parent_node_id_type"] = ptype
            payload = _ndus(parent)[n][2]
            if ptype == 0:
                f["parent_device_id"] = 0
                if drop_node_id:
                    f["node_id_present_flag"] = 0
                    f.pop("device_id", None)
            elif ptype == 1:
                f["parent_node_payload_sha256"] = int.from_bytes(hashlib.sha256(payload).digest(), "big")
            else:
                f["parent_node_payload_sha512"] = int.from_bytes(hashlib.sha512(payload).digest(), "big")
    return edit


hand("parent_id_in_parent_arm", "updates that identify the parent by device/parameter id and depth "
     "without node identification (parameter_id, put_node_depth in the parent arm)",
     edited("nnr/inc_notca", _parent(0, True)), ["incremental"], base="nnr/inc_notca", kind="sequence")
hand("parent_sha256", "updates that identify the parent by the SHA-256 of its payload (parent_node_id_type 1)",
     edited("nnr/inc_notca", _parent(1, False)), ["incremental"], base="nnr/inc_notca", kind="sequence")
hand("parent_sha512", "updates that identify the parent by the SHA-512 of its payload (parent_node_id_type 2)",
     edited("nnr/inc_notca", _parent(2, False)), ["incremental"], base="nnr/inc_notca", kind="sequence")


def _maps():
    spm = {"spm_count_thresholds": 3, "sparsification_threshold": [0.1, 0.2], "non_zero_ratio": [0.5, 0.25],
           "spm_nn_accuracy": [0.75, 0.5], "spm_count_classes": [2, 0], "spm_class_bitmask": [3, 0],
           "spm_nn_class_accuracy": [[0.5, 0.25], []]}
    ppm = {"ppm_count_pruning_ratios": 2, "pruning_ratio": [0.5], "ppm_nn_accuracy": [0.625], "ppm_count_classes": [1],
           "ppm_class_bitmask": [1], "ppm_nn_class_accuracy": [[0.5]]}
    upm = {"upm_count_thresholds": 2, "count_reshaped_tensor_dimension": [3], "reshaped_tensor_dimensions": [[4, 6]],
           "count_super_block_dimension": [2], "super_block_dimensions": [[2]], "count_block_dimension": [3],
           "block_dimensions": [[2, 3]], "unification_threshold": [0.125], "upm_nn_accuracy": [0.75],
           "upm_count_classes": [2], "upm_class_bitmask": [2], "upm_nn_class_accuracy": [[0.5, 0.75]]}
    dpm = {"dpm_count_thresholds": 2, "mse_threshold": [0.001], "dpm_nn_accuracy": [0.5], "nn_reduction_ratio": [0.25],
           "dpm_count_classes": [2], "dpm_nn_class_accuracy": [[0.5, 0.25]]}
    return spm, ppm, upm, dpm


def _mps_maps(units, k):
    spm, ppm, upm, dpm = _maps()
    f = find(units, NNR_MPS)[1]
    f.update(mps_sparsification_flag=1, mps_pruning_flag=1, mps_unification_flag=1,
             mps_decomposition_performance_map_flag=1, sparsification_performance_map=spm,
             pruning_performance_map=ppm, unification_performance_map=upm, decomposition_performance_map=dpm)
    if find(units, NNR_STR)[1]["general_profile_idc"] == 1:
        f.update(base_model_id_present_flag=1, base_model_id="nnr-conformance-base",
                 validation_set_performance_present_flag=1, metric_type_performance_map_valid_flag=1,
                 performance_metric_type="top-1 accuracy", validation_set_performance=0.875)


hand("mps_performance_maps", "MPS with all four performance maps, base_model_id, performance_metric_type and "
     "validation_set_performance", edited("nnr/multi_tensor", _mps_maps), base="nnr/multi_tensor")
hand("mps_performance_maps_p0", "edition-1 MPS with all four performance maps", edited("nnr/p0_nncodec1", _mps_maps),
     base="nnr/p0_nncodec1")


def _metric_only(units, k):
    find(units, NNR_MPS)[1].update(metric_type_performance_map_valid_flag=1, performance_metric_type="mAP")


hand("mps_metric_type_only", "MPS with metric_type_performance_map_valid_flag 1 only",
     edited("nnr/p1_float", _metric_only), base="nnr/p1_float")


def _lps(qp_delta=0, maps=True, quant=True):
    def edit(units, k):
        mps = find(units, NNR_MPS)[1]
        spm, ppm, upm, _ = _maps()
        f = {"lps_self_contained_flag": 1, "nnr_reserved_zero_7bits": 0, "nnr_reserved_zero_1bit": 0,
             "lps_sparsification_flag": int(maps), "lps_pruning_flag": int(maps), "lps_unification_flag": int(maps),
             "lps_quantization_method_flags": 1 if quant else 0, "nnr_reserved_zero_1bit_2": 0}
        if quant:
            f.update(lps_qp_density=mps["mps_qp_density"],
                     lps_quantization_parameter=mps["mps_quantization_parameter"] + qp_delta)
        if maps:
            f.update(sparsification_performance_map=spm, pruning_performance_map=ppm, unification_performance_map=upm)
        at = units.index(find(units, NNR_NDU))
        units.insert(at, [NNR_LPS, f, b""])
    return edit


hand("lps_maps", "an NNR_LPS before the NDUs: self-contained, performance maps, the MPS's QP settings",
     edited("nnr/multi_tensor", _lps()), ["unit:LPS"], base="nnr/multi_tensor")
hand("lps_plain", "an NNR_LPS without maps or quantization parameters", edited("nnr/p1_float", _lps(maps=False, quant=False)),
     ["unit:LPS"], base="nnr/p1_float")
hand("lps_base_qp", "an NNR_LPS whose base QP (+4) overrides the MPS's for the NDUs after it",
     edited("nnr/p1_float", _lps(qp_delta=4, maps=False)), ["unit:LPS"], base="nnr/p1_float")


def _indexed(units, k):
    names = []
    for u in _ndus(units):
        f = u[1]
        if f.get("nnr_multiple_topology_elements_present_flag"):
            names += f["topology_elem_id_list"]
        else:
            names.append(f["topology_elem_id"])
    find(units, NNR_MPS)[1]["mps_topology_indexed_reference_flag"] = 1
    tpl = find(units, NNR_TPL)[1]
    tpl.update(topology_storage_format=6, topology_elem_id_list=names)
    tpl.pop("topology_data", None)
    for u in _ndus(units):
        f = u[1]
        if f.get("nnr_multiple_topology_elements_present_flag"):
            f["topology_elem_id_index_list"] = [names.index(n) for n in f.pop("topology_elem_id_list")]
        else:
            f["topology_elem_id_index"] = names.index(f.pop("topology_elem_id"))
    units.insert(2, units.pop(units.index(find(units, NNR_TPL))))


hand("tpl_reflist_indexed", "NNR_TPL reference list (storage format 6) with NDUs naming tensors by index",
     edited("nnr/multi_tensor", _indexed), ["tpl:reflist"], base="nnr/multi_tensor")
t, opt = _block(["bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var"])
plain("block_with_plain", "a block and a plain tensor", {**t, "extra": gauss(90, (5, 4))}, ["block"],
      block_id_and_param_type=opt)
hand("tpl_reflist_block", "indexed references for an NNR_PT_BLOCK (topology_elem_id_index_list)",
     edited("nnr/block_with_plain", _indexed), ["tpl:reflist", "block"], base="nnr/block_with_plain")


DEFLATED = bytes.fromhex('78da4bcecf2bd330d6b1d031d654284acd2955c8c9cc4b4d2cd2b0d03134d0040085070887')    # zlib.compress(b"conv(3,8,3) relu linear(8,10)"), fixed bytes


def _tpl(fmt, compression, data):
    def edit(units, k):
        f = find(units, NNR_TPL)[1]
        f.update(topology_storage_format=fmt, topology_compression_format=compression)
        if isinstance(data, bytes):         # binary topology: bytes to the end of the unit
            f.update(topology_data="", topology_data_byte=list(data))
        else:
            f["topology_data"] = data
    return edit


for fmt, comp, data, label in [(1, 0, b"version 1.0;\ngraph g(x) -> (y) { y = linear(x); }\n", "nnef"),
                               (2, 0, b"\x08\x07\x12\x04onnx", "onnx"),
                               (3, 1, DEFLATED, "pytorch_deflate"),
                               (4, 0, "tef:model", "tef")]:
    hand(f"tpl_{label}", f"NNR_TPL with topology_storage_format {fmt}, topology_compression_format {comp}, "
         f"{'binary topology_data_byte' if isinstance(data, bytes) else 'text topology_data'}",
         edited("nnr/p1_float", _tpl(fmt, comp, data)), base="nnr/p1_float")


def _mps_no_quant(units, k):
    find(units, NNR_MPS)[1]["mps_quantization_method_flags"] = 0


plain("int_and_raw", "an NNR_PT_INT and an NNR_PT_RAW_FLOAT tensor", {"i": np.arange(12, dtype=np.int32).reshape(3, 4),
      "r": B}, ["integer", "raw_float"], raw_float=("r",))
hand("mps_no_quantization", "MPS without quantization parameters (mps_quantization_method_flags 0): only "
     "NNR_PT_INT and NNR_PT_RAW_FLOAT tensors", edited("nnr/int_and_raw", _mps_no_quant), base="nnr/int_and_raw")


def _str_mps_only(units, k):
    del units[2:]


hand("str_mps_only", "a stream of NNR_STR and NNR_MPS only (no tensors)", edited("nnr/mps_performance_maps", _str_mps_only),
     base="nnr/mps_performance_maps")


def _dc_pair(scan_order=0):
    """A separately coded decomposition W = G x H (two NDUs, compressed_parameter_types DC)."""
    g, h = gauss(91, (6, 2), 0.3), gauss(92, (2, 8), 0.3)
    ug = units_of(nnr.encode({"W_G": g}, dq=False, scan_order=scan_order))
    uh = units_of(nnr.encode({"W_H": h}, dq=False, scan_order=scan_order))
    out = ug[:3]
    for u, rows in ((find(ug, NNR_NDU), 6), (find(uh, NNR_NDU), 6)):
        f = u[1]
        f.update(compressed_parameter_types=1, decomposition_rank=2, g_number_of_rows=rows,
                 count_tensor_dimensions=2, tensor_dimensions=[6, 8])
        out.append(u)
    return [assemble(out)]


hand("decomposition_pair", "low-rank decomposition: a G unit (6x2) followed by its H unit (2x8), "
     "compressed_parameter_types DC", _dc_pair, ["decomposition"])
hand("decomposition_pair_scan1", "the decomposition pair with scan order 1 (entry-point counts from "
     "g_number_of_rows for G and decomposition_rank for H)", lambda: _dc_pair(1), ["decomposition"])


# the must-reject streams and the hostile-input cases (registered after the cases above, in order)
from nnr.conformance import cases_reject  # noqa: E402,F401
