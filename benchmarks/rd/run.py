"""One model's measurements: the reference's QP sweep (in its own venv) and every nnr mode's curve,
each stream decoded by nnr.decode and scored with the model's task metric."""
import hashlib
import os
import shutil
import time

import numpy as np

from benchmarks.rd import importance as imp_mod
from benchmarks.rd.curves import bits_at, saving
from benchmarks.rd.modes import MODES

HERE = os.path.dirname(os.path.abspath(__file__))
# the reference's options: nnr.encode's defaults, as `python -m benchmarks` passes them (nnc.compress's
# own default is row_skipping=False; both codecs get the same options, qp set per point)
REF_OPTIONS = dict(qp=-32, qp_density=2, nonweight_qp=-75, dq=True, scan_order=0, row_skipping=True,
                   param_opt=True, cabac_unary_length_minus1=10)
FULL_QPS = list(range(-20, -43, -2))          # -20 .. -42 (a model may choose its own: ModelSpec.qps)
QUICK_QPS = [-24, -30, -36]
BUDGET_QPS = tuple(range(-20, -41, -2))       # budgets of the "bpp" modes: the reference's sizes at these QPs
# the per-tensor search encodes the model ~50 times per budget: six budgets around the qp -30 and -36 points
FEW_BUDGET_QPS = (-26, -28, -30, -34, -36, -38)
SUMMARY_QPS = (-30, -36)
KL_PROBES = 8                   # probes per calibration batch of the "kl" importance
IMPORTANCE_PROBES = {"gauss-newton": 1, "kl": KL_PROBES}


class Context:
    """What a mode codes with: the model, the settings, the importance (computed once, timed)."""

    def __init__(self, spec, jobs, quick, sparsity, log, row_sparsity=0.1):
        self.spec, self.tensors, self.jobs, self.log = spec, spec.tensors, jobs, log
        self.sparsity, self.row_sparsity = sparsity, row_sparsity
        self.qps = QUICK_QPS if quick else list(spec.qps or FULL_QPS)
        self.budget_qps = QUICK_QPS if quick else tuple(spec.budget_qps or BUDGET_QPS)
        self.few_budget_qps = QUICK_QPS if quick else tuple(spec.few_budget_qps or FEW_BUDGET_QPS)
        self.params = sum(int(v.size) for v in spec.tensors.values())
        self.budgets = []               # [(qp, bits/param)] of the reference curve, set before the "bpp" modes
        self.cache = {}
        self.importance_info = None
        self.kl_importance_info = None
        self.hessians_info = None

    def importance(self, method="gauss-newton"):
        """nnr.importance(method=..., probes=IMPORTANCE_PROBES[method]) on the calibration data (computed
        once per method, timed; its facts in importance_info, or kl_importance_info for "kl")."""
        key = ("importance", method)
        if key not in self.cache:
            probes = IMPORTANCE_PROBES[method]
            imp, src, secs = imp_mod.compute(self.spec, method=method, probes=probes)
            self.cache[key] = imp
            info = {"source": src, "method": method, "seconds": secs, "tensors": len(imp),
                    "batches": len(self.spec.calibration)}
            if method == "kl":
                self.kl_importance_info = dict(info, probes=probes)
            else:
                self.importance_info = info
            self.log(f"  importance ({src}, {method}, {probes} probe(s) per batch): {len(imp)} tensors in {secs:.1f} s")
        return self.cache[key]

    def hessians(self):
        """nnr.rd.layer_hessians on the calibration data (computed once, timed)."""
        if "hessians" not in self.cache:
            import nnr.rd
            t0 = time.perf_counter()
            self.cache["hessians"] = nnr.rd.layer_hessians(self.spec.module, self.spec.calibration)
            secs = time.perf_counter() - t0
            self.hessians_info = {"seconds": secs, "tensors": len(self.cache["hessians"])}
            self.log(f"  layer hessians: {len(self.cache['hessians'])} tensors in {secs:.1f} s")
        return self.cache["hessians"]


class Scorer:
    """Decode a stream with nnr.decode and score it (once per distinct stream)."""

    def __init__(self, spec, jobs):
        self.spec, self.jobs, self.seen = spec, jobs, {}

    def __call__(self, data):
        import nnr
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self.seen:
            t0 = time.perf_counter()
            decoded = nnr.decode(data, jobs=self.jobs)
            t1 = time.perf_counter()
            metric = float(self.spec.metric({k: np.asarray(v) for k, v in decoded.items()}))
            self.seen[sha] = {"sha256": sha, "metric": metric, "decode_s": t1 - t0,
                              "metric_s": time.perf_counter() - t1}
        return dict(self.seen[sha])


def reference_curve(ctx, reference, score, workdir, log):
    """The reference's points: nnc.compress at every QP in its venv, decoded by nnr.decode and scored;
    the qp -30 stream (or the middle one) is also decoded by the reference and compared with nnr's decode."""
    import nnr
    from benchmarks.__main__ import run_peer
    d = os.path.join(workdir, f"ref-{ctx.spec.name}")
    os.makedirs(d, exist_ok=True)
    np.savez(os.path.join(d, "input.npz"), **ctx.tensors)
    script = os.path.join(HERE, "peer_nncodec.py")
    t0 = time.perf_counter()
    res = run_peer(d, "encode", REF_OPTIONS, 1, reference=reference, extra={"qps": ctx.qps}, script=script)
    if "error" in res:
        return {"error": res["error"]}
    log(f"  reference sweep: {len(ctx.qps)} QPs in {time.perf_counter() - t0:.0f} s")
    points = []
    for p in res["points"]:
        with open(os.path.join(d, f"qp{p['qp']}.nnc"), "rb") as f:
            data = f.read()
        s = score(data)
        points.append({"setting": p["qp"], "bytes": p["bytes"], "bpp": 8.0 * p["bytes"] / ctx.params,
                       "encode_s": p["seconds"], **s})
        log(f"  reference qp {p['qp']}: {points[-1]['bpp']:.4f} bits/param, metric {s['metric']:.4f}")
    check_qp = -30 if -30 in ctx.qps else ctx.qps[len(ctx.qps) // 2]
    name = f"qp{check_qp}.nnc"
    dec = run_peer(d, "decode", REF_OPTIONS, 1, reference=reference, extra={"files": [name]}, script=script)
    agree = None
    if "error" not in dec:
        with open(os.path.join(d, name), "rb") as f:
            ours = nnr.decode(f.read())
        with np.load(os.path.join(d, name + ".npz")) as z:
            agree = sorted(z.files) == sorted(ours) and all(
                np.array_equal(np.asarray(ours[k]).reshape(-1), z[k].reshape(-1)) for k in z.files)
    shutil.rmtree(d, ignore_errors=True)
    return {"points": points, "decoder_check": {"qp": check_qp, "identical": agree,
                                                "error": dec.get("error", "").strip().splitlines()[-1:] or None}}


def mode_curve(mode, ctx, score, log):
    """The mode's points ({"error": ...} per point that fails); [] with a reason when not available."""
    wanted = ctx.few_budget_qps if mode.costly else ctx.budget_qps
    values = ctx.qps if mode.axis == "qp" else [b for q, b in ctx.budgets if q in wanted]
    points = []
    for v in values:
        t0 = time.perf_counter()
        try:
            data = mode.encode(ctx, v)
        except Exception as err:                      # a mode's failure is a result, not the end of the run
            points.append({"setting": v, "error": f"{type(err).__name__}: {err}"})
            log(f"  {mode.key} {v}: ERROR {points[-1]['error']}")
            continue
        enc = time.perf_counter() - t0
        p = {"setting": v, "bytes": len(data), "bpp": 8.0 * len(data) / ctx.params, "encode_s": enc, **score(data)}
        if mode.axis == "bpp":
            p["fit_pct"] = 100.0 * (p["bpp"] / v - 1.0)
        points.append(p)
        log(f"  {mode.key} {v:.4g}: {p['bpp']:.4f} bits/param, metric {p['metric']:.4f}, encode {enc:.1f} s")
    return points


def summarise(result, higher):
    """Savings at equal metric: at the reference's qp -30 / -36 points, and at every nnr point."""
    ref = result.get("reference", {}).get("points") or result["modes"]["reference"]["points"]
    ref_curve = [(p["bpp"], p["metric"]) for p in ref if "metric" in p]
    at_qp = {}
    for qp in SUMMARY_QPS:
        rp = next((p for p in ref if p["setting"] == qp and "metric" in p), None)
        if rp is None:
            continue
        # the reference's own envelope may reach that metric with fewer bits (a metric that is flat and noisy
        # beyond the knee): savings against both, the point as measured and the envelope
        env_bits, _ = bits_at(ref_curve, rp["metric"], higher)
        row = {"ref_bpp": rp["bpp"], "ref_metric": rp["metric"], "ref_env_bpp": env_bits, "modes": {}}
        for key, m in result["modes"].items():
            pts = [(p["bpp"], p["metric"]) for p in m.get("points", []) if "metric" in p]
            if not pts:
                continue
            bits, how = bits_at(pts, rp["metric"], higher)
            row["modes"][key] = {"bpp": bits, "how": how, "saving_pct": saving(bits, rp["bpp"]),
                                 "saving_env_pct": saving(bits, env_bits)}
        at_qp[str(qp)] = row
    for m in result["modes"].values():
        for p in m.get("points", []):
            if "metric" in p:
                rb, how = bits_at(ref_curve, p["metric"], higher)
                p["ref_bpp_same_metric"], p["ref_how"] = rb, how
                p["saving_pct"] = saving(p["bpp"], rb)
    return at_qp


def why_not(mode, spec):
    """None when `mode` runs on `spec`'s model, else why not."""
    return mode.unavailable() or (mode.classifier_only and not spec.classifier
                                  and "n/a (the model's output is not class logits)") or None


def run_model(spec, reference, args, workdir, log):
    """Everything measured on one model (a JSON-able dict)."""
    t_model = time.perf_counter()
    ctx = Context(spec, args.jobs, args.quick, args.sparsity, log, args.row_sparsity)
    score = Scorer(spec, args.jobs)
    t0 = time.perf_counter()
    float_metric = float(spec.metric(spec.tensors))
    result = {"name": spec.name, "title": spec.title, "params": ctx.params, "tensors": len(spec.tensors),
              "metric_name": spec.metric_name, "higher_is_better": spec.higher_is_better, "data": spec.data_note,
              "notes": spec.notes, "float_metric": float_metric, "qps": ctx.qps, "budget_qps": ctx.budget_qps,
              "few_budget_qps": ctx.few_budget_qps,
              "timings": {"setup_s": spec.setup_s, "metric_s": time.perf_counter() - t0}, "modes": {}}
    log(f"{spec.title}: {ctx.params} parameters in {len(spec.tensors)} tensors, float metric {float_metric:.4f}")
    if reference is not None:
        t0 = time.perf_counter()
        result["reference"] = reference_curve(ctx, reference, score, workdir, log)
        result["timings"]["reference_s"] = time.perf_counter() - t0
    chosen = getattr(args, "modes", None)
    for method in sorted({m.importance for m in MODES if m.importance and (not chosen or m.key in chosen)
                          and not why_not(m, spec)}):
        ctx.importance(method)          # once per method, timed on its own (not inside a mode's encode time)
    for mode in MODES:
        if chosen and mode.key != "reference" and mode.key not in chosen:
            continue
        entry = {"label": mode.label, "axis": mode.axis, "note": mode.note}
        reason = why_not(mode, spec)
        if reason:
            entry["unavailable"] = reason
            result["modes"][mode.key] = entry
            log(f"  {mode.key}: {reason}")
            continue
        t0 = time.perf_counter()
        entry["points"] = mode_curve(mode, ctx, score, log)
        entry["seconds"] = time.perf_counter() - t0
        if mode.key == "reference":
            ref_pts = {p["setting"]: p for p in result.get("reference", {}).get("points", [])}
            for p in entry["points"]:
                if p["setting"] in ref_pts:
                    p["same_as_reference"] = p.get("sha256") == ref_pts[p["setting"]]["sha256"]
            ctx.budgets = [(p["setting"], p["bpp"]) for p in entry["points"] if "bpp" in p]
        result["modes"][mode.key] = entry
    result["importance"] = ctx.importance_info
    result["kl_importance"] = ctx.kl_importance_info
    result["hessians"] = ctx.hessians_info
    result["summary"] = summarise(result, spec.higher_is_better)
    result["timings"]["total_s"] = time.perf_counter() - t_model
    return result
