"""Generates the NNCodec 1.x codebook_mode=1 ("codebook always") edition-1 vectors in this folder.

Every case is written by NNCodec 1.x itself (github.com/fraunhoferhhi/nncodec, commit
0e3dcd2961701572d253f175754c09952a4b44c7, package NNC 0.3.1, general_profile_idc 0) through its own
`nnc.compress(parameter_dict, ...)` / `nnc.decompress(bytearray)` API, unmodified.

Build (once; about 2.5 minutes, it compiles the deepCABAC C++ extension). The interpreter is
NNCodec 2.1.3's venv (CPython 3.11.7, numpy 1.26.4, torch CPU); 1.x goes into its own target folder
and does not clash with 2.1.3's `nncodec` package. The tree holds one large file (the example
squeezenet .pt) whose blob the mirror lacks, so the archive leaves out the *.pt files (git still
prints `error: invalid object ... example/squeezenet1_1_pytorch_zoo.pt` once; it exits 0 and every
other file is extracted):

    G=/work/.mirror/fraunhoferhhi+nncodec/repo C=0e3dcd2961701572d253f175754c09952a4b44c7
    mkdir -p /tmp/nncodec1-src
    git --git-dir=$G archive $C $(git --git-dir=$G ls-tree -r --name-only $C | grep -v '\\.pt$') \\
        | tar -x -C /tmp/nncodec1-src
    PY=/root/.cache/nnr/nncodec-2.1.3/bin/python
    $PY -m pip install --target /tmp/n1build-deps pybind11          # build-time only (3.1.0 here)
    cd /tmp/nncodec1-src && PYTHONPATH=/tmp/n1build-deps $PY -m pip install --no-deps \\
        --no-build-isolation --target /root/.cache/nnr/nncodec-1.x-lib .

Run (writes the case folders next to this file, or under --out DIR):

    cd /tmp && PYTHONPATH=/root/.cache/nnr/nncodec-1.x-lib \\
        /root/.cache/nnr/nncodec-2.1.3/bin/python /work/main/bitstreams/nncodec-1.x-codebook1/generate.py

NNCodec 1.x's `framework` package imports tensorflow, pandas, torchvision, cv2 and sklearn at module
level (for its model-zoo and dataset helpers, which dict coding never calls); nnr's import
placeholders (nnr/testenv/nncodec_stubs/sitecustomize.py), installed below for the missing ones,
make them importable (using one raises). The cross-check with NNCodec
2.1.3 runs `nncodec.nnc.decompress` in a subprocess of the same interpreter WITHOUT the 1.x lib on
PYTHONPATH, with PYTHONPATH=/work/main/nnr/testenv/nncodec_stubs (--nncodec2-stubs); its result
is recorded in config.json, never used to change a file here.
"""
import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

NNCODEC1_COMMIT = "0e3dcd2961701572d253f175754c09952a4b44c7"
PLACEHOLDER_PACKAGES = ("tensorflow", "pandas", "torchvision", "cv2", "sklearn", "h5py")


# ---------------------------------------------------------------- import placeholders (generation only)
def _placeholder_finder(packages):
    """nnr's NNCodec import placeholders (nnr/testenv/nncodec_stubs/sitecustomize.py) for `packages`."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "nnr", "testenv", "nncodec_stubs",
                        "sitecustomize.py")
    spec = importlib.util.spec_from_file_location("nnr_nncodec_stubs", path)
    stubs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stubs)
    return stubs.PlaceholderFinder(packages)


MISSING_OPTIONAL = tuple(p for p in PLACEHOLDER_PACKAGES if importlib.util.find_spec(p) is None)
if MISSING_OPTIONAL:
    sys.meta_path.insert(0, _placeholder_finder(MISSING_OPTIONAL))

import deepCABAC  # noqa: E402
import nnc  # noqa: E402
import nnc_core  # noqa: E402
import nnc_core.coder  # noqa: E402
from nnc_core import hls  # noqa: E402

assert "nncodec-1.x" in nnc.__file__ or "nnc/" in nnc.__file__, nnc.__file__

# ---------------------------------------------------------------- nnc.compress defaults
# nnc.compress(parameter_dict, bitstream_path="./bitstream.nnc", qp=-38, qp_density=2, nonweight_qp=-75,
# qp_per_tensor=None, use_dq=True, codebook_mode=0, scan_order=0, lambda_scale=0, param_opt=True,
# cabac_unary_length_minus1=10, opt_qp=False, ioq=False, bnf=False, lsa=False, fine_tune=False,
# block_id_and_param_type=None, model=None, model_executer=None, verbose=True, return_bitstream=False)
DEFAULTS = {
    "bitstream_path": "./bitstream.nnc", "qp": -38, "qp_density": 2, "nonweight_qp": -75,
    "qp_per_tensor": None, "use_dq": True, "codebook_mode": 0, "scan_order": 0, "lambda_scale": 0,
    "param_opt": True, "cabac_unary_length_minus1": 10, "opt_qp": False, "ioq": False, "bnf": False,
    "lsa": False, "fine_tune": False, "block_id_and_param_type": None, "verbose": True,
    "return_bitstream": False,
}
# Always passed (not part of the coding configuration): no file written, the bytes returned, quiet.
FIXED = {"bitstream_path": None, "return_bitstream": True, "verbose": False}

CENTROIDS = [-0.31, -0.12, 0.0, 0.05, 0.19, 0.42]


def gen_few_values(seed=111):
    r = np.random.RandomState(seed)
    c = np.array(CENTROIDS).astype(np.float32)
    return {"w": c[r.randint(0, 6, (64, 64))] + r.randn(64, 64).astype(np.float32) * np.float32(5e-4)}


FEW_VALUES_EXPR = ("r = RandomState(111); c = np.array([-0.31,-0.12,0,0.05,0.19,0.42]).astype(float32); "
                   "{'w': c[r.randint(0,6,(64,64))] + r.randn(64,64).astype(float32) * float32(5e-4)} "
                   "(the input of nncodec-1.x/cb_codebook_mode2_nodq, bit for bit)")


def gen_gauss(seed, shape, std):
    r = np.random.RandomState(seed)
    return {"w": (r.randn(*shape) * std).astype(np.float32)}


def gen_multi(seed=404):
    r = np.random.RandomState(seed)
    return {
        "conv.weight": (r.randn(8, 4, 3, 3) * 0.05).astype(np.float32),
        "fc.weight": (r.randn(32, 48) * 0.05).astype(np.float32),
        "fc.bias": (r.randn(32) * 0.1).astype(np.float32),
        "emb.idx": r.randint(-40, 41, (6, 8)).astype(np.int32),
    }


MULTI_EXPR = ("r = RandomState(404); {'conv.weight': (r.randn(8,4,3,3)*0.05).astype(float32), "
              "'fc.weight': (r.randn(32,48)*0.05).astype(float32), 'fc.bias': (r.randn(32)*0.1).astype(float32), "
              "'emb.idx': r.randint(-40,41,(6,8)).astype(int32)} (in this order)")

CASES = [
    {
        "case": "cb1_few_values_nodq",
        "description": "codebook_mode=1, 6 centroids + N(0,5e-4) noise, DQ off, qp=-32",
        "exercises": "codebook always; few distinct values (same input/settings as nncodec-1.x/cb_codebook_mode2_nodq, where mode 2 also chose the codebook)",
        "seed": 111, "gen": gen_few_values, "expr": FEW_VALUES_EXPR,
        "args": {"qp": -32, "use_dq": False, "codebook_mode": 1},
        "compare_with": "../nncodec-1.x/cb_codebook_mode2_nodq",
    },
    {
        "case": "cb1_few_values_dq",
        "description": "codebook_mode=1, 6 centroids + N(0,5e-4) noise, use_dq=True, qp=-32",
        "exercises": "use_dq with the codebook: NNCodec 1.x quantises without DQ at qp - (1 << qp_density) = -36 and writes dq_flag 0",
        "seed": 111, "gen": gen_few_values, "expr": FEW_VALUES_EXPR,
        "args": {"qp": -32, "use_dq": True, "codebook_mode": 1},
    },
    {
        "case": "cb1_gauss_nodq",
        "description": "codebook_mode=1, N(0,0.05) [48,80], DQ off, qp=-36",
        "exercises": "codebook forced on Gaussian weights where uniform is cheaper (large codebook, codebook_egk choice)",
        "seed": 303, "gen": lambda: gen_gauss(303, (48, 80), 0.05),
        "expr": "{'w': (RandomState(303).randn(48,80)*0.05).astype(float32)}",
        "args": {"qp": -36, "use_dq": False, "codebook_mode": 1},
    },
    {
        "case": "cb1_multi_tensor_dq",
        "description": "codebook_mode=1, dict of 4 tensors (4-D conv weight, 2-D fc weight, 1-D bias, 2-D int32), use_dq=True, qp=-30",
        "exercises": "multi-tensor stream: codebook on weight QP (-30-4) and non-weight QP (-75-4) tensors, int32 tensor as NNR_PT_INT (untouched)",
        "seed": 404, "gen": gen_multi, "expr": MULTI_EXPR,
        "args": {"qp": -30, "use_dq": True, "codebook_mode": 1},
    },
    {
        "case": "cb1_qpd3_cul3_dq",
        "description": "codebook_mode=1, qp_density=3, cabac_unary_length_minus1=3, use_dq=True, qp=-44, N(0,0.05) [64,64]",
        "exercises": "qp_density 3 (stepsize and DQ-equivalent shift 1 << 3 = 8) and a short unary part (N=3)",
        "seed": 505, "gen": lambda: gen_gauss(505, (64, 64), 0.05),
        "expr": "{'w': (RandomState(505).randn(64,64)*0.05).astype(float32)}",
        "args": {"qp": -44, "qp_density": 3, "cabac_unary_length_minus1": 3, "use_dq": True, "codebook_mode": 1},
    },
    {
        "case": "cb1_scan_order1_nodq",
        "description": "codebook_mode=1, scan_order=1 (8x8 blocks), [100,70] N(0,0.05), DQ off, qp=-32",
        "exercises": "codebook indices in block scan 1 with several block rows and entry points",
        "seed": 606, "gen": lambda: gen_gauss(606, (100, 70), 0.05),
        "expr": "{'w': (RandomState(606).randn(100,70)*0.05).astype(float32)}",
        "args": {"qp": -32, "use_dq": False, "scan_order": 1, "codebook_mode": 1},
    },
    {
        "case": "cb1_param_opt_off_nodq",
        "description": "codebook_mode=1, param_opt=False, [64,128] N(0,0.05), DQ off, qp=-32",
        "exercises": "codebook indices without context-parameter optimisation (all signalled flags 0)",
        "seed": 707, "gen": lambda: gen_gauss(707, (64, 128), 0.05),
        "expr": "{'w': (RandomState(707).randn(64,128)*0.05).astype(float32)}",
        "args": {"qp": -32, "use_dq": False, "param_opt": False, "codebook_mode": 1},
    },
    {
        "case": "cb1_lambda_scale1_nodq",
        "description": "codebook_mode=1, lambda_scale=1.0 (rate-distortion rounding in the URQ), [64,64] Laplace(0,0.03), DQ off, qp=-32",
        "exercises": "lambda_scale > 0: the levels behind the codebook come from the RDO quantiser, not plain rounding",
        "seed": 808, "gen": lambda: {"w": np.random.RandomState(808).laplace(0, 0.03, (64, 64)).astype(np.float32)},
        "expr": "{'w': RandomState(808).laplace(0,0.03,(64,64)).astype(float32)}",
        "args": {"qp": -32, "use_dq": False, "lambda_scale": 1.0, "codebook_mode": 1},
    },
]


# ---------------------------------------------------------------- helpers
def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if hasattr(v, "name") and hasattr(v, "value") and isinstance(v.value, int):  # enum
        return int(v.value)
    return v


def encode(tensors, args):
    full = dict(DEFAULTS)
    full.update(args)
    full.update(FIXED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bs = nnc.compress({k: v.copy() for k, v in tensors.items()}, **full)
    return bytes(bs), full, [l for l in out.getvalue().splitlines() if l.strip()]


def decode(bs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dec = nnc.decompress(bytearray(bs), verbose=False)
    return dec


def decode_levels(bs):
    """nnc_core.coder.decode (entropy-decoded integers) + the NNR unit dicts its HLS parser filled."""
    units = []
    orig_init = hls.Coder.__init__

    def capture(self, reader, nnr_unit, *a, **kw):
        if not any(u is nnr_unit for u in units):
            units.append(nnr_unit)
        return orig_init(self, reader, nnr_unit, *a, **kw)

    model_info = {'parameter_type': {}, 'parameter_dimensions': {}, 'parameter_index': {}, 'block_identifier': {},
                  'topology_storage_format': None, 'topology_compression_format': None,
                  'performance_maps': {"mps": {}, "lps": {}},
                  'performance_map_flags': {"mps_sparsification_flag": {}, "lps_sparsification_flag": {},
                                            "mps_pruning_flag": {}, "lps_pruning_flag": {},
                                            "mps_unification_flag": {}, "lps_unification_flag": {},
                                            "mps_decomposition_performance_map_flag": {},
                                            "lps_decomposition_performance_map_flag": {}}}
    hls.Coder.__init__ = capture
    try:
        ad = nnc_core.coder.decode(bytearray(bs), model_info, {})
    finally:
        hls.Coder.__init__ = orig_init
    return ad, units


UNIT_NAMES = {0: "NNR_STR", 1: "NNR_MPS", 2: "NNR_LPS", 3: "NNR_TPL", 4: "NNR_QNT", 5: "NNR_NDU", 6: "NNR_AGG"}
PT_NAMES = {0: "NNR_PT_INT", 1: "NNR_PT_FLOAT", 2: "NNR_PT_RAW_FLOAT", 3: "NNR_PT_BLOCK"}


def unit_table(bs, unit_dicts):
    """Offsets/sizes of the NNR units (walked from nnr_unit_size) with the fields NNCodec 1.x parsed."""
    units, pos = [], 0
    while pos < len(bs):
        flag = bs[pos] >> 7
        if flag:
            size = int.from_bytes(bs[pos:pos + 4], "big") & 0x7FFFFFFF
            hdr = 4
        else:
            size = int.from_bytes(bs[pos:pos + 2], "big") & 0x7FFF
            hdr = 2
        utype = bs[pos + hdr] >> 2
        units.append({"offset": pos, "size": size, "type": UNIT_NAMES.get(utype, str(utype))})
        pos += size
    assert pos == len(bs), "unit sizes do not add up to the stream length"
    # The dicts NNCodec 1.x's HLS parser filled, one per unit in stream order (STR included).
    dicts = [d for d in unit_dicts if "nnr_unit_type" in d]
    assert len(dicts) == len(units), (len(dicts), len(units))
    for u, d in zip(units, dicts):
        assert UNIT_NAMES.get(int(d["nnr_unit_type"])) == u["type"] and int(d["nnr_unit_size"]) == u["size"]
        fields = {(k[:-2] if k.endswith("__") else k): jsonable(v) for k, v in d.items()}
        if u["type"] == "NNR_NDU":
            fields["_payload_type_name"] = PT_NAMES.get(int(d.get("nnr_compressed_data_unit_payload_type", -1)))
        u["fields"] = fields
    return units


def save_tensors(path_base, tensors):
    if len(tensors) == 1 and "w" in tensors:
        np.save(path_base + ".npy", tensors["w"])
        return os.path.basename(path_base) + ".npy"
    np.savez(path_base + ".npz", **tensors)
    return os.path.basename(path_base) + ".npz"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


NNCODEC2_SCRIPT = r"""
import sys, traceback, numpy as np, io, contextlib
res = {}
try:
    import nncodec
    res["nncodec2_version"] = getattr(nncodec, "__version__", None)
    from nncodec import nnc as n2
    bs = open(sys.argv[1], "rb").read()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dec = n2.decompress(bytearray(bs))
    np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in dec.items()})
    res["decompress"] = "ok"
    res["stdout_tail"] = out.getvalue().splitlines()[-5:]
except BaseException as e:
    res["decompress"] = "exception"
    res["exception"] = f"{type(e).__name__}: {e}".strip()
import json; print("@@RESULT@@" + json.dumps(res))
"""


def nncodec2_check(bs, decoded, python, stubs):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = stubs
    with tempfile.TemporaryDirectory() as d:
        bpath, opath = os.path.join(d, "b.nnc"), os.path.join(d, "o.npz")
        with open(bpath, "wb") as f:
            f.write(bs)
        p = subprocess.run([python, "-c", NNCODEC2_SCRIPT, bpath, opath], env=env, cwd=d,
                           capture_output=True, text=True, timeout=600)
        line = [l for l in p.stdout.splitlines() if l.startswith("@@RESULT@@")]
        if not line:
            return {"decompress": "crash", "returncode": p.returncode, "stderr_tail": p.stderr.splitlines()[-5:]}, False
        res = json.loads(line[0][len("@@RESULT@@"):])
        same = False
        if res["decompress"] == "ok":
            z = np.load(opath)
            same = set(z.files) == set(decoded) and all(
                z[k].dtype == np.asarray(decoded[k]).dtype and z[k].shape == np.asarray(decoded[k]).shape
                and np.array_equal(z[k], np.asarray(decoded[k])) for k in decoded)
            res["outcome"] = "decodes identically" if same else "decodes, output differs"
            if not same:
                res["max_abs_diff"] = {k: float(np.abs(z[k].astype(np.float64) - np.asarray(decoded[k], np.float64)).max())
                                       for k in decoded if k in z.files and z[k].shape == np.asarray(decoded[k]).shape}
        else:
            msg = res.get("exception", "")
            res["outcome"] = "fails: " + (msg.split(":")[0] + (" (terminating bin not received)"
                                                               if "Terminating Bin" in msg else ""))
        res["decoder"] = ("nncodec 2.1.3: nncodec.nnc.decompress(bytearray(bitstream)) in a separate process, "
                          "PYTHONPATH=" + stubs + " (NNCodec 1.x not on the path)")
        res["decoded_identical"] = same
        return res, same


def levels_meta_of(ad, names):
    meta = {}
    for k in names:
        m = {"approx_method": ad["approx_method"].get(k), "dtype": str(ad["parameters"][k].dtype),
             "shape": list(ad["parameters"][k].shape)}
        if k in ad.get("qp", {}):
            m["qp"] = int(ad["qp"][k])
        if k in ad.get("dq_flag", {}):
            m["dq_flag"] = int(ad["dq_flag"][k])
        if k in ad["codebooks"]:
            m["codebook"] = [int(x) for x in ad["codebooks"][k]]
            m["codebook_size"] = len(ad["codebooks"][k])
            m["codebook_zero_offset"] = int(ad["codebook_zero_offsets"][k])
            m["codebook_egk"] = int(ad["codebooks_egk"][k])
        if k in ad["scan_order"]:
            m["scan_order"] = int(ad["scan_order"][k])
        meta[k] = m
    meta["_qp_density"] = int(ad["qp_density"]) if "qp_density" in ad else None
    return meta


def reconstruct_from_levels(ad, k):
    lv = ad["parameters"][k]
    method = ad["approx_method"].get(k)
    if method == "skip":
        return lv
    qpd = int(ad["qp_density"])
    qp = int(ad["qp"][k])
    step = nnc_core.common.get_stepsize_from_qp(qp, qpd)
    if method == "codebook":
        cb = ad["codebooks"][k] * step
        return cb[lv + ad["codebook_zero_offsets"][k]]
    return None


def environment():
    import torch
    dist = [d for d in os.listdir(os.path.dirname(os.path.dirname(nnc.__file__))) if d.startswith("nnc-") and d.endswith(".dist-info")]
    return {
        "nncodec_version": "1.x " + NNCODEC1_COMMIT,
        "nncodec_package": "NNC 0.3.1 (setup.py __version__; HEAD = tag v0.3.1 + README-only commits)",
        "nncodec_source": f"github.com/fraunhoferhhi/nncodec @ {NNCODEC1_COMMIT} (NNCodec 1.x, package NNC 0.3.1), "
                          "git archive of the mirror without the example *.pt blob",
        "installed_dist_info": dist,
        "python_side": "nnc, nnc_core, framework from the same commit, unmodified",
        "deepCABAC_module": os.path.basename(deepCABAC.__file__),
        "build": "pip install --no-deps --no-build-isolation --target <lib> . with pybind11 3.1.0, g++ (Debian 12.2.0), -O3 -std=c++17",
        "import_placeholders": list(MISSING_OPTIONAL),
        "numpy_version": np.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "general_profile_idc": 0,
    }


def run_case(spec, outdir, env, n2_python, n2_stubs, skip_n2=False):
    name = spec["case"]
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    tensors = spec["gen"]()
    bs, full_args, stdout = encode(tensors, spec["args"])
    bs2, _, _ = encode(tensors, spec["args"])
    decoded = decode(bs)
    ad, unit_dicts = decode_levels(bs)
    names = list(tensors)
    assert list(decoded) == names, (list(decoded), names)
    levels = {k: ad["parameters"][k] for k in names}

    files = {"input": save_tensors(os.path.join(d, "input"), tensors)}
    with open(os.path.join(d, "bitstream.nnc"), "wb") as f:
        f.write(bs)
    files["bitstream"] = "bitstream.nnc"
    files["decoded"] = save_tensors(os.path.join(d, "decoded"), {k: np.asarray(v) for k, v in decoded.items()})
    np.savez(os.path.join(d, "levels.npz"), **levels)
    files["levels"] = "levels.npz"

    rec_ok = {}
    for k in names:
        r = reconstruct_from_levels(ad, k)
        rec_ok[k] = bool(r is not None and np.asarray(r).dtype == np.asarray(decoded[k]).dtype
                         and np.array_equal(np.asarray(r), np.asarray(decoded[k])))

    num_params = int(sum(v.size for v in tensors.values()))
    float_err = [float(np.abs(np.asarray(decoded[k], np.float64) - tensors[k].astype(np.float64)).max()) for k in names]
    per_tensor_err = {k: e for k, e in zip(names, float_err)}

    # codebook_mode=2 with the same settings: would the rate comparison have picked the codebook?
    bs_m2, _, _ = encode(tensors, dict(spec["args"], codebook_mode=2))
    ad_m2, _ = decode_levels(bs_m2)
    mode2 = {"bitstream_bytes": len(bs_m2), "identical_to_this_stream": bs_m2 == bs,
             "approx_method_chosen": {k: ad_m2["approx_method"].get(k) for k in names}}

    units = unit_table(bs, unit_dicts)
    peer = None
    if spec.get("compare_with"):
        pd = os.path.normpath(os.path.join(outdir, spec["compare_with"]))
        if not os.path.isdir(pd):  # --out elsewhere: look next to this script
            pd = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), spec["compare_with"]))
        if os.path.isdir(pd):
            with open(os.path.join(pd, "bitstream.nnc"), "rb") as f:
                peer_bs = f.read()
            peer_in = np.load(os.path.join(pd, "input.npy"))
            peer = {"vector": spec["compare_with"], "input_identical": bool(np.array_equal(peer_in, tensors["w"])),
                    "bitstream_identical": peer_bs == bs, "peer_bitstream_bytes": len(peer_bs)}
    cfg = {
        "case": name,
        "description": spec["description"],
        "exercises": spec["exercises"],
        "edition": 1,
        "general_profile_idc": 0,
        "api": "nnc.compress (NNCodec 1.x, nnc/compression.py)",
        "encoder_call": "nnc.compress(parameter_dict, **encoder_args)",
        "encoder_args": jsonable(full_args),
        "encoder_args_non_default": jsonable({k: v for k, v in full_args.items()
                                              if k not in FIXED and DEFAULTS.get(k) != v}),
        "input_tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                              "nncodec1_parameter_type": "weight" if v.ndim > 1 else "unspecified"}
                          for k, v in tensors.items()},
        "numpy_seed": spec["seed"],
        "input_generator": spec["expr"],
        "decoder_call": "nnc.decompress(bytearray(bitstream), verbose=False)",
        "levels_call": "nnc_core.coder.decode(bytearray(bitstream), <empty model_info as in nnc.decompress>, {})['parameters']",
        "levels_semantics": "NNCodec 1.x entropy-decoded integers before reconstruction: codebook -> coded integer = "
                            "codebook index - CbZeroOffset, reconstruction = codebook[level + CbZeroOffset] x "
                            "stepsize(qp, qp_density); skip (int32, NNR_PT_INT) -> the values themselves",
        "levels_reconstruct_decoded_exactly": rec_ok,
        "environment": env,
        "files": files,
        "bitstream_bytes": len(bs),
        "num_params": num_params,
        "bits_per_param": 8.0 * len(bs) / num_params,
        "max_abs_error_vs_input": max(float_err),
        "max_abs_error_per_tensor": per_tensor_err,
        "levels_meta": levels_meta_of(ad, names),
        "nnr_units": units,
        "nnr_units_summary": " ".join(
            f"{u['type']}@{u['offset']}({u['size']}B" + (
                f",{u['fields'].get('_payload_type_name')},id={u['fields'].get('topology_elem_id')}"
                if u["type"] == "NNR_NDU" and "fields" in u else "") + ")" for u in units),
        "encoder_stdout": stdout,
        "deterministic_reencode_same_process": bs == bs2,
        "codebook_mode2_same_settings": mode2,
    }
    if peer is not None:
        cfg["existing_vector_comparison"] = peer
    if not skip_n2:
        res, same = nncodec2_check(bs, {k: np.asarray(v) for k, v in decoded.items()}, n2_python, n2_stubs)
        cfg["nncodec2_decodes_identically"] = same
        cfg["nncodec2_cross_check"] = res
    with open(os.path.join(d, "sha256.txt"), "w") as f:
        for fn in sorted(os.listdir(d)):
            if fn in ("config.json", "sha256.txt"):
                continue
            f.write(f"{sha256(os.path.join(d, fn))}  {fn}\n")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--nncodec2-python", default=sys.executable)
    ap.add_argument("--nncodec2-stubs", default="/work/main/nnr/testenv/nncodec_stubs")
    ap.add_argument("--skip-nncodec2", action="store_true")
    ap.add_argument("--cases", nargs="*")
    a = ap.parse_args()
    env = environment()
    summary = []
    for spec in CASES:
        if a.cases and spec["case"] not in a.cases:
            continue
        cfg = run_case(spec, a.out, env, a.nncodec2_python, a.nncodec2_stubs, a.skip_nncodec2)
        summary.append({k: cfg.get(k) for k in ("case", "bitstream_bytes", "bits_per_param", "max_abs_error_vs_input",
                                                "deterministic_reencode_same_process", "nncodec2_decodes_identically")})
        print(json.dumps(summary[-1]), flush=True)
    return summary


if __name__ == "__main__":
    main()
