"""nnr_encode's modes: how each tensor's QP is chosen, and what a warned tensor's line advises.

* bounded (the default): the reference's QPs (qp -32 for weights, --nonweight-qp for the rest),
  except that a tensor they leave above the relative-error bound B (--max-relative-error; relative
  RMSE = RMSE / RMS of the tensor, nnr.rd.sweep.relative_rmse) gets the coarsest QP that brings it
  within B. A model none of whose tensors needs that is written with the reference's bytes.
* quality: --quality R, every tensor of two or more dimensions at the coarsest QP whose decoded
  relative RMSE is at most R (nnr.rd.search_target_relative_error); 1-D tensors (biases,
  normalisation scales, running statistics) at --nonweight-qp.
* qp: --qp N, the reference's absolute QP (step 2^(N / 2^qp_density)) for weight tensors; with the
  other defaults, the reference's bytes. --codebook alone uses it too (qp -32).
* bitdepth: --bitdepth N derives each tensor's QP from its range (the reference's integer mode).
* lossless: --lossless carries floats uncoded; no QP.
The QPs a search chose are checked on the written stream: a tensor that misses its target has its
QP lowered and the model is coded again. Every mode ends with the summary's warnings
(nnr.cli.summary): a tensor that decodes to all zeros or above the bound is named, with the QP
that would fix it.
"""
from dataclasses import dataclass, field
from typing import Optional

from nnr.cli.common import EXIT_USAGE, ToolError
from nnr.errors import EncoderConfigError

DEFAULT_BOUND = 0.1             # relative RMSE: the default mode holds every tensor within it, others warn
REFERENCE_QP = -32              # the reference's default QP (--qp, --codebook, the default mode)


@dataclass
class Outcome:
    """What nnr_encode wrote in its mode."""

    data: bytes
    decoded: Optional[list] = None              # DecodedTensors of `data`, where the mode decoded it
    qps: dict = field(default_factory=dict)     # qp_per_tensor the mode chose ({}: the encoder's rule)
    before: dict = field(default_factory=dict)  # bounded mode: {refined tensor: (QP, relative RMSE) before}
    searched: tuple = ()                        # the tensors whose QP a search chose


def resolve(args) -> str:
    """The mode of nnr_encode's options; a ToolError (status 2) for a combination that means nothing."""
    def refuse(flag, why, mode="--quality"):
        raise ToolError(f"{mode} cannot be combined with {flag}: {why}", EXIT_USAGE)
    if args.bpp is not None:
        for flag, given in (("--qp", args.qp is not None), ("--quality", args.quality is not None),
                            ("--bitdepth", args.bitdepth is not None), ("--codebook", args.codebook),
                            ("--lossless", args.lossless)):
            if given:
                refuse(flag, "--bpp chooses every weight tensor's QP itself", "--bpp")
        return "bpp"
    if args.quality is not None:
        if args.qp is not None:
            refuse("--qp", "both set the weights' QPs (--qp: one absolute QP; --quality: a QP per tensor)")
        if args.bitdepth is not None:
            refuse("--bitdepth", "--bitdepth derives each tensor's QP from its range itself")
        if args.codebook:
            refuse("--codebook", "codebook quantization works at one absolute QP (use --qp with --codebook)")
        if args.lossless:
            refuse("--lossless", "--lossless carries the floats uncoded, there is no QP to choose")
        return "quality"
    if args.lossless:
        return "lossless"
    if args.bitdepth is not None:
        return "bitdepth"
    if args.qp is not None or args.codebook:
        return "qp"
    return "bounded"


def codable(tensors, options, mode) -> dict:
    """The tensors a mode's search may choose QPs for: floating point and coded (not raw); quality
    mode: of two or more dimensions."""
    raw = set(options.get("raw_float", ()))
    return {n: a for n, a in tensors.items() if a.dtype.kind == "f" and n not in raw
            and (a.ndim > 1 or mode != "quality")}


def encode(args, tensors, options, code, decode, trace=None, progress=None) -> Outcome:
    """Write the model in args.mode. code(options, trace) -> bitstream with these encoder options;
    decode(bitstream) -> DecodedTensors. The searching modes decode what they wrote (their check), so
    the summary need not decode again."""
    from nnr_core.bitstream.trace import Trace
    if args.mode not in ("quality", "bounded"):
        return Outcome(code(options, trace))

    def attempt(qps):
        sink = Trace() if trace is not None else None        # only the last coding's trace is kept
        data = code(dict(options, qp_per_tensor=qps or None), sink)
        decoded = decode(data)
        return (data, sink, decoded), {t.name: t.values for t in decoded}

    checked = codable(tensors, options, args.mode)
    if args.mode == "quality":
        target = args.quality
        qps = {n: args.nonweight_qp for n, a in tensors.items() if a.dtype.kind == "f" and a.ndim == 1}
        qps.update(_search(args, checked, target, options, progress))
        before = {}
    else:
        from nnr.rd.sweep import relative_rmse
        target = args.max_relative_error
        first, values = attempt(None)
        over = {n: relative_rmse(a, values[n]) for n, a in checked.items()}
        over = {n: r for n, r in over.items() if r > target}
        if not over:
            return _outcome(first, trace, {}, {}, ())
        stream = {t.name: t.qp for t in first[2]}
        before = {n: (stream[n], r) for n, r in over.items()}
        found = _search(args, {n: checked[n] for n in over}, target, options, progress)
        qps = {n: min(q, stream[n] - 1) for n, q in found.items()}
    searched = tuple(n for n in qps if n in checked and (args.mode == "quality" or n in before))
    qps, result, _ = _lower_until_met(args, {n: checked[n] for n in searched}, qps, target, options, attempt)
    return _outcome(result, trace, qps, before, searched)


def _outcome(result, trace, qps, before, searched):
    data, sink, decoded = result
    if trace is not None:
        for record in sink:
            trace.emit(*record)
    return Outcome(data, decoded, qps, before, searched)


def _search(args, tensors, target, options, progress):
    """{name: the coarsest QP meeting target}; the finest QP for a tensor no QP brings within it."""
    from nnr.rd import search_target_relative_error
    if not tensors:
        return {}
    return search_target_relative_error(tensors, target, only_weights=False, verify=False, strict=False,
                                        progress=progress, jobs=args.jobs, **_quant_options(options))


def _lower_until_met(args, checked, qps, target, options, attempt):
    """The check on the written stream (nnr.rd.search.lower_until_met) for the tensors of `qps`."""
    from nnr.rd.search import lower_until_met
    from nnr.rd.sweep import relative_rmse
    return lower_until_met(qps, attempt, lambda dec, n: n not in checked or relative_rmse(checked[n], dec[n]) <= target,
                           lo=_finest(options))


def _finest(options):
    from nnr.rd.search import _qp_bounds
    return _qp_bounds(options.get("qp_density", 2), None)[0]


def describe(args, mode, outcome=None) -> str:
    """The summary's mode line."""
    qps = outcome.qps if outcome is not None else {}
    if mode == "bounded":
        refined = ", ".join(f"{n} at qp {q}" for n, q in qps.items())
        what = f"finer for {len(qps)} tensor{'s' if len(qps) > 1 else ''}: {refined}" if qps else \
            "the reference's QPs on every tensor"
        return (f"qp {REFERENCE_QP} within relative RMSE {args.max_relative_error:g} per tensor ({what}; "
                f"1-D / non-weight tensors at qp {args.nonweight_qp})")
    if mode == "quality":
        weights = [qps[n] for n in outcome.searched]
        span = f"per-tensor QP {min(weights)}..{max(weights)}" if weights else "no tensor of 2+ dimensions"
        return f"quality {args.quality:g} (relative RMSE per tensor; {span}; 1-D tensors at qp {args.nonweight_qp})"
    if mode == "bpp":
        weights = "importance-weighted error" if args.importance else "squared error"
        return f"budget {args.bpp:g} bits/parameter (per-tensor QPs of least {weights}; 1-D / non-weight " \
               f"tensors at qp {args.nonweight_qp})"
    if mode == "qp":
        what = {None: "", "cheaper": ", codebook", "always": ", codebook always"}[args.codebook]
        return f"qp {REFERENCE_QP if args.qp is None else args.qp} (absolute{what}; 1-D / non-weight tensors at " \
               f"qp {args.nonweight_qp})"
    if mode == "bitdepth":
        return f"bitdepth {args.bitdepth} (each tensor's QP from its range)"
    return "lossless (floats uncoded)"


def notes(outcome) -> list:
    """Bounded mode: a line for each tensor coded finer than the reference's QP, and why."""
    return [f"note: tensor {n!r} would have relative RMSE {rel:.3g} at qp {qp} (the reference's QP); coded at "
            f"qp {outcome.qps[n]} instead" for n, (qp, rel) in outcome.before.items()]


def _quant_options(options):
    keep = ("qp_density", "dq", "scan_order", "lambda_scale", "cabac_unary_length_minus1", "framework")
    return {k: options[k] for k in keep if k in options}


def limit(args, mode, options, tensors):
    """limit(row) -> the relative RMSE above which the summary warns about that tensor: the bound
    (--max-relative-error), and in quality mode for a searched tensor also R (it could not be met)."""
    checked = codable(tensors, options, mode) if mode == "quality" else {}

    def bound(row):
        if row.name in checked:
            return min(args.max_relative_error, args.quality)
        return args.max_relative_error
    return bound


def advice(args, mode, options, tensors):
    """advice(row) -> what a warned tensor's line suggests: the QP that brings it within the bound
    (found by the same search), on the flag that coded it."""
    from nnr.rd import search_target_relative_error
    searched = codable(tensors, options, mode) if mode in ("quality", "bounded") else {}
    bound = args.max_relative_error
    lo = _finest(options)

    def fix(name):
        try:
            return search_target_relative_error({name: tensors[name]}, bound, only_weights=False, verify=False,
                                                strict=True, **_quant_options(options))[name]
        except EncoderConfigError:         # the bound is out of reach
            return None

    def say(row):
        if mode == "bitdepth":
            return "use a higher --bitdepth, or --quality"
        if mode == "bpp":
            return ("the budget gives it this error: raise --bpp, or give it more weight with --importance "
                    "(without a budget, the default mode keeps every tensor within the bound)")
        if mode == "quality" and row.name in searched and args.quality > bound:
            return f"use --quality {bound:g} or lower"
        if row.name in searched:            # the search went down to the finest QP
            target = f"--quality {args.quality:g}" if mode == "quality" else f"relative RMSE {bound:g}"
            return f"no QP down to {lo} meets {target}; --lossless carries it exactly"
        nonweight = _is_nonweight(row.name, tensors[row.name], options, mode)
        qp = fix(row.name)
        if qp is None:
            return f"no QP down to {lo} meets relative RMSE {bound:g}; --lossless carries it exactly"
        more = "" if nonweight else " (nnr_encode's default mode gives just this tensor a finer QP)"
        flag = "--nonweight-qp" if nonweight else "--qp"
        return f"{flag} {qp} or lower keeps it within relative RMSE {bound:g}{more}"
    return say


def _is_nonweight(name, array, options, mode):
    """Whether the encoder codes this tensor with --nonweight-qp (quality mode: every 1-D tensor)."""
    if mode == "quality":
        return array.ndim == 1
    from nnr_core.encoder.prepare import prepare
    return not prepare({name: array}, options.get("framework", "generic"))[0].is_weight
