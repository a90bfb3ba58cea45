"""How each reference vector was encoded, expressed as nnr encoder options (from its config.json)."""
import json
import os

import numpy as np

from tests.vectors import ROOT

# nncodec.nnc.compress defaults (NNCodec 2.1.3 and 1.x)
COMPRESS_DEFAULTS = dict(qp=-38, qp_density=2, nonweight_qp=-75, qp_per_tensor=None, use_dq=True,
                         codebook_mode=0, scan_order=0, lambda_scale=0, param_opt=True,
                         cabac_unary_length_minus1=10, row_skipping=False, int_quant_bw=None)


def _load_inputs(path, prefix=""):
    npz = os.path.join(path, prefix + "input.npz")
    if os.path.exists(npz):
        with np.load(npz) as z:
            return {k: z[k] for k in z.files}
    return np.load(os.path.join(path, prefix + "input.npy"))


def _options(a, gpi):
    opts = dict(qp=int(a["qp"]), qp_density=int(a.get("qp_density", 2)), nonweight_qp=a.get("nonweight_qp", -75),
                dq=bool(a["use_dq"]), codebook={0: False, 1: "always", 2: True}[int(a.get("codebook_mode", 0))],
                bitdepth=a.get("int_quant_bw") or None, scan_order=int(a.get("scan_order", 0)),
                row_skipping=bool(a.get("row_skipping", False)), param_opt=bool(a.get("param_opt", True)),
                cabac_unary_length_minus1=int(a.get("cabac_unary_length_minus1", 10)),
                qp_per_tensor=a.get("qp_per_tensor"), lambda_scale=float(a.get("lambda_scale", 0)),
                general_profile_idc=gpi)
    if a.get("opt_qp"):
        return None
    return opts


def encoder_plan(set_name, case):
    """(options, [(inputs, encode kwargs, expected bitstream)], reason-if-not-expressible)."""
    path = os.path.join(ROOT, set_name, case)
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    api = c.get("api", "")
    ea = c.get("encoder_args") or {}
    gpi = 0 if set_name.startswith("nncodec-1.x") else 1
    if api.startswith("nncodec.tensor.encode"):
        extra = c.get("compress_params_not_forwarded_by_tensor_api") or {}
        a = dict(COMPRESS_DEFAULTS, **{k: v for k, v in extra.items() if k != "codebook_mode"})
        a.update(qp=ea["qp"], use_dq=ea["use_dq"], row_skipping=ea["row_skipping"], param_opt=ea["param_opt"],
                 qp_per_tensor=ea.get("qp_per_tensor"), int_quant_bw=ea.get("bitdepth"), opt_qp=ea.get("opt_qp"),
                 codebook_mode=2 if ea.get("approx_method") == "codebook" else 0)
        name = ea.get("tensor_id", "0")
        opts = _options(a, gpi)
        if "steps" in c:
            steps = []
            for s in c["steps"]:
                k = s["step"]
                with open(os.path.join(path, f"step{k}_bitstream.nnc"), "rb") as f:
                    bs = f.read()
                steps.append(({name: np.load(os.path.join(path, f"step{k}_input.npy"))},
                              dict(incremental=bool(ea.get("compress_differences")), tca=bool(ea.get("tca"))), bs))
            return opts, steps, "stateful"
        inputs = np.load(os.path.join(path, "sparsified_input.npy")) if ea.get("sparsity") else _load_inputs(path)
        inputs = {name: inputs}
    elif "nnc.compress" in api:
        a = dict(COMPRESS_DEFAULTS, **ea)
        opts = _options(a, gpi)
        inputs = _load_inputs(path)
        if not isinstance(inputs, dict):
            inputs = {"w": inputs}
    elif api.startswith("nncodec.nn.encode"):
        a = dict(COMPRESS_DEFAULTS, qp=ea["qp"], nonweight_qp=ea["nonweight_qp"], use_dq=ea["use_dq"],
                 qp_per_tensor=ea.get("qp_per_tensor"), param_opt=ea["param_opt"], row_skipping=ea["row_skipping"],
                 int_quant_bw=ea.get("bitdepth"), opt_qp=ea.get("opt_qp"),
                 codebook_mode=2 if ea.get("approx_method") == "codebook" else 0)
        opts = _options(a, gpi)
        if ea.get("input_passed_as") == "torch.nn.Module":
            opts["framework"] = "pytorch"
            inputs = ("torch", os.path.join(path, "model.pt"))
        else:
            inputs = _load_inputs(path)
    else:
        return None, [], f"unknown api {api!r}"
    if opts is None:
        return None, [], "inference-based QP optimisation (opt_qp) needs the reference's model"
    if gpi == 0:
        opts["profile0_variant"] = "nncodec1"
    with open(os.path.join(path, "bitstream.nnc"), "rb") as f:
        bs = f.read()
    return opts, [(inputs, {}, bs)], "stateless"
