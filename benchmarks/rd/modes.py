"""The nnr modes the benchmark compares with the reference: one small function each, in a registry.

A mode codes the model at one setting -- a QP (axis "qp") or a budget in bits per parameter (axis
"bpp", the reference curve's sizes) -- and returns the bitstream. Modes written against APIs that nnr
does not have yet report "n/a (not available)" until they exist: `nnr.encode(..., target_bpp=...)`
(and its `sparsity=` option), `nnr.rd.sparsify(tensors, sparsity, structured=..., importance=...)`;
`nnr.importance` replaces the harness's own importance when present (benchmarks/rd/importance.py).
"""
import functools
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

SEARCH_QP_RANGE = (-52, 0)      # the per-tensor search's QP grid (every 2nd QP), around the benchmark's range
LAMBDA = 1.0                    # lambda_scale of the importance-weighted quantizer (examples/rd_efficientnet_lite0.py)


@dataclass
class Mode:
    key: str
    label: str
    axis: str                                   # "qp" or "bpp"
    encode: Callable                            # encode(ctx, value) -> bytes
    note: str
    needs: tuple = ()                           # checks: () -> None when present, else why not
    importance: str = ""                        # the calibration importance it uses: "gauss-newton", "kl" or none
    costly: bool = False                        # "bpp" modes: only the budgets at the model's few_budget_qps
    classifier_only: bool = False               # runs only on models whose output is class logits

    def unavailable(self) -> Optional[str]:
        """None when the mode can run with this nnr, else why not."""
        for need in self.needs:
            reason = need()
            if reason:
                return reason
        return None


def _probe():
    return {"w": np.random.default_rng(0).normal(0.0, 0.05, (16, 64)).astype(np.float32)}


@functools.lru_cache(maxsize=None)
def _encode_option(name, value) -> Optional[str]:
    """None when nnr.encode knows option `name` (tried once on a small tensor), else the reason."""
    import nnr
    opts = {name: value}
    if name != "target_bpp":
        opts["target_bpp"] = 4.0
    try:
        nnr.encode(_probe(), **opts)
    except nnr.EncoderConfigError as err:
        if "unknown" in str(err):
            return f"n/a (not available): nnr.encode: {err}"
    except TypeError as err:
        return f"n/a (not available): nnr.encode: {err}"
    except Exception:           # known, but the probe fails otherwise: the mode runs and reports per point
        pass
    return None


def _rd_missing(name) -> Optional[str]:
    """None when nnr.rd has the function `name`, else the reason."""
    import nnr.rd
    return None if callable(getattr(nnr.rd, name, None)) else f"n/a (not available): nnr.rd.{name}"


def _sparsify_missing() -> Optional[str]:
    return _rd_missing("sparsify")


def _target_bpp_missing():
    return _encode_option("target_bpp", 4.0)


def _sparsity_missing():
    return _encode_option("sparsity", 0.1)


def _any_sparsification_missing():
    a, b = _sparsity_missing(), _sparsify_missing()
    return f"{a}; {b}" if a and b else None


def _reference(ctx, qp):
    import nnr
    return nnr.encode(ctx.tensors, qp=int(qp), jobs=ctx.jobs)


def _search(ctx, bpp):
    import nnr
    from nnr.rd import search_target_bpp
    qpt = search_target_bpp(ctx.tensors, float(bpp), per_tensor=True, qp_range=SEARCH_QP_RANGE, jobs=ctx.jobs)
    return nnr.encode(ctx.tensors, qp_per_tensor=qpt, jobs=ctx.jobs)


def _weighted(ctx, qp):
    import nnr
    return nnr.encode(ctx.tensors, qp=int(qp), importance=ctx.importance(), lambda_scale=LAMBDA, jobs=ctx.jobs)


def _target(ctx, bpp):
    import nnr
    return nnr.encode(ctx.tensors, target_bpp=float(bpp), jobs=ctx.jobs)


def _target_importance(ctx, bpp):
    import nnr
    return nnr.encode(ctx.tensors, target_bpp=float(bpp), importance=ctx.importance(), jobs=ctx.jobs)


def _target_corrected(ctx, bpp):
    from nnr.rd import encode_corrected
    return encode_corrected(ctx.spec.module, ctx.tensors, ctx.spec.calibration, target_bpp=float(bpp),
                            importance=ctx.importance(), jobs=ctx.jobs)


def _target_rounded(ctx, bpp):
    import nnr
    return nnr.encode(ctx.tensors, target_bpp=float(bpp), importance=ctx.importance(), hessians=ctx.hessians(),
                      jobs=ctx.jobs)


def _target_rounded_corrected(ctx, bpp):
    from nnr.rd import encode_corrected
    return encode_corrected(ctx.spec.module, ctx.tensors, ctx.spec.calibration, target_bpp=float(bpp),
                            importance=ctx.importance(), hessians=ctx.hessians(), jobs=ctx.jobs)


def _target_kl(ctx, bpp):
    import nnr
    return nnr.encode(ctx.tensors, target_bpp=float(bpp), importance=ctx.importance("kl"), jobs=ctx.jobs)


def _target_kl_corrected(ctx, bpp):
    from nnr.rd import encode_corrected
    return encode_corrected(ctx.spec.module, ctx.tensors, ctx.spec.calibration, target_bpp=float(bpp),
                            importance=ctx.importance("kl"), jobs=ctx.jobs)


def _kl_missing():
    import nnr.rd.importance as imp
    return None if "kl" in getattr(imp, "METHODS", ()) else "n/a (not available): nnr.importance has no method='kl'"


def _rounding_missing():
    return _rd_missing("layer_hessians") or _encode_option("hessians", None)


def _correction_missing():
    return _rd_missing("encode_corrected")


def _sparsified(ctx, structured):
    """The tensors after nnr.rd.sparsify at ctx.sparsity (computed once per model and kind)."""
    key = ("sparse", structured)
    if key not in ctx.cache:
        import nnr.rd
        out = nnr.rd.sparsify(ctx.tensors, ctx.row_sparsity if structured else ctx.sparsity, structured=structured,
                              importance=ctx.importance())
        ctx.cache[key] = out[0] if isinstance(out, tuple) else out
    return ctx.cache[key]


def _target_sparse(ctx, bpp):
    import nnr
    if _sparsity_missing() is None:                     # the encoder's own sparsification
        return nnr.encode(ctx.tensors, target_bpp=float(bpp), importance=ctx.importance(), sparsity=ctx.sparsity,
                          jobs=ctx.jobs)
    return nnr.encode(_sparsified(ctx, False), target_bpp=float(bpp), importance=ctx.importance(), jobs=ctx.jobs)


def _target_structured(ctx, bpp):
    import nnr
    if _sparsity_missing() is None:                     # the encoder's own, zeros pinned through quantization
        return nnr.encode(ctx.tensors, target_bpp=float(bpp), importance=ctx.importance(),
                          sparsity=ctx.row_sparsity, sparsity_structured=True, jobs=ctx.jobs)
    return nnr.encode(_sparsified(ctx, True), target_bpp=float(bpp), importance=ctx.importance(), jobs=ctx.jobs)


MODES = [
    Mode("reference", "nnr default (qp sweep)", "qp", _reference,
         "nnr.encode(tensors, qp=q): the reference's choices, so the reference's bytes"),
    Mode("search", "nnr.rd per-tensor QP search", "bpp", _search,
         f"nnr.rd.search_target_bpp(tensors, b, per_tensor=True, qp_range={SEARCH_QP_RANGE}) then "
         "nnr.encode(qp_per_tensor=...): equal-slope allocation of plain squared error on real coded sizes",
         costly=True),
    Mode("weighted", "importance-weighted levels (qp sweep)", "qp", _weighted,
         f"nnr.encode(tensors, qp=q, importance=imp, lambda_scale={LAMBDA:g}): importance-weighted RD "
         "quantization (nnr_core/quant/weighted.py), QPs as the reference's", importance="gauss-newton"),
    Mode("target", "nnr.encode(target_bpp)", "bpp", _target,
         "nnr.encode(tensors, target_bpp=b): per-tensor Lagrangian QP allocation by plain MSE",
         needs=(_target_bpp_missing,)),
    Mode("target+imp", "nnr.encode(target_bpp, importance)", "bpp", _target_importance,
         "nnr.encode(tensors, target_bpp=b, importance=imp): allocation by importance-weighted distortion "
         "and importance-weighted levels", needs=(_target_bpp_missing,), importance="gauss-newton"),
    Mode("target+imp+bias", "target_bpp + importance + bias correction", "bpp", _target_corrected,
         "nnr.rd.encode_corrected(module, tensors, calibration, target_bpp=b, importance=imp): the same, then each "
         "layer's mean output shift on the calibration data undone in its bias or the next batch norm's running "
         "mean, and those tensors coded again inside the budget", needs=(_target_bpp_missing, _correction_missing),
         importance="gauss-newton"),
    Mode("target+kl", "nnr.encode(target_bpp, kl importance)", "bpp", _target_kl,
         "nnr.encode(tensors, target_bpp=b, importance=nnr.importance(module, calibration, method='kl', probes=8)): "
         "the allocation and levels weighted by the classifier's own Fisher (classifiers only)",
         needs=(_target_bpp_missing, _kl_missing), importance="kl", costly=True, classifier_only=True),
    Mode("target+kl+bias", "target_bpp + kl importance + bias correction", "bpp", _target_kl_corrected,
         "nnr.rd.encode_corrected(module, tensors, calibration, target_bpp=b, importance=<the kl importance>)",
         needs=(_target_bpp_missing, _kl_missing, _correction_missing), importance="kl", costly=True,
         classifier_only=True),
    Mode("target+imp+gptq", "target_bpp + importance + output-aware rounding", "bpp", _target_rounded,
         "nnr.encode(tensors, target_bpp=b, importance=imp, hessians=nnr.rd.layer_hessians(module, calibration)): "
         "the allocation, with the Linear and Conv layers' levels rounded for the least output error (GPTQ, "
         "nnr_core/quant/gptq.py; no dependent quantization on them)", needs=(_target_bpp_missing, _rounding_missing),
         importance="gauss-newton"),
    Mode("target+imp+gptq+bias", "target_bpp + importance + output-aware rounding + bias correction", "bpp",
         _target_rounded_corrected,
         "nnr.rd.encode_corrected(module, tensors, calibration, target_bpp=b, importance=imp, hessians=...)",
         needs=(_target_bpp_missing, _rounding_missing, _correction_missing), importance="gauss-newton"),
    Mode("target+imp+sparse", "target_bpp + importance + sparsity", "bpp", _target_sparse,
         "nnr.encode(tensors, target_bpp=b, importance=imp, sparsity=s), or nnr.rd.sparsify(tensors, s, "
         "structured=False, importance=imp) first where the encoder has no sparsity option",
         needs=(_target_bpp_missing, _any_sparsification_missing), importance="gauss-newton"),
    Mode("target+imp+rows", "target_bpp + importance + row sparsity", "bpp", _target_structured,
         "nnr.encode(tensors, target_bpp=b, importance=imp, sparsity=s, sparsity_structured=True) (whole rows), or "
         "nnr.rd.sparsify(tensors, s, structured=True, importance=imp) first where the encoder has no sparsity "
         "option", needs=(_target_bpp_missing, _any_sparsification_missing), importance="gauss-newton"),
]
BY_KEY = {m.key: m for m in MODES}
