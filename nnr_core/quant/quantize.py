"""Encoder quantizers: uniform (CABAC §9.3), trellis-coded (CABAC §8.3), bit depth (CABAC §9.4),
codebook (CABAC §9.5).

None of this is normative: it reproduces NNCodec 2.1.3's encoder decisions level for level, so
that our bitstreams equal the reference's.
"""
import math

import numpy as np

from nnr_core.errors import EncoderConfigError, SyntaxValueError
from nnr_core.quant import _quant, _quant_rate
from nnr_core.quant.reconstruct import QP_DENSITY_MAX, step_size

INT32_GUARD = (1 << 31) - 3   # CABAC §9.3 overflow guard: Delta_min = max|w| / (2^31 - 3)
EGK_MAX = 15                  # codebook_egk is u(4)


# ---------------------------------------------------------------------------------------------
# Arguments


def _as_float32(w, name="w"):
    """C-contiguous float32 copy-or-view of `w`; rejects NaN and infinities."""
    arr = np.ascontiguousarray(w, dtype=np.float32)
    if arr.size and not np.all(np.isfinite(arr)):
        raise EncoderConfigError(f"{name} contains NaN or infinite values")
    return arr


def _check_qp(qp, qp_density):
    if not isinstance(qp_density, (int, np.integer)) or not 0 <= qp_density <= QP_DENSITY_MAX:
        raise EncoderConfigError(f"qp_density must be 0..{QP_DENSITY_MAX}, got {qp_density!r}")
    if not isinstance(qp, (int, np.integer)):
        raise EncoderConfigError(f"qp must be an integer, got {qp!r}")
    return int(qp), int(qp_density)


def _qstep32(qp, qp_density):
    """Delta rounded once to float32, as NNCodec's quantLayer passes it (CABAC §9.1)."""
    try:
        delta = step_size(qp, qp_density)
    except SyntaxValueError:            # beyond double, let alone float32 (QP >= 1024 << qp_density)
        delta = math.inf
    with np.errstate(over="ignore", under="ignore"):
        delta32 = np.float32(delta)
    if not np.isfinite(delta32) or delta32 == 0:
        raise EncoderConfigError(f"QP {qp} gives a step size outside float32")
    return delta32


def _coding_shape(shape):
    """[Rows, RowWidth] of CABAC §7: first dimension by the product of the rest; 1-D is [n, 1]."""
    if len(shape) == 0:
        return 1, 1
    rows = int(shape[0])
    width = 1
    for d in shape[1:]:
        width *= int(d)
    return rows, width


def _effective_scan_order(rows, row_width, scan_order):
    """NNCodec forces the matrix scan for one column or one row (CABAC §7)."""
    if scan_order not in (0, 1, 2, 3, 4):
        raise EncoderConfigError(f"scan_order must be 0..4, got {scan_order!r}")
    if row_width == 1 or rows <= 1:
        return 0
    return int(scan_order)


def _check_lambda(lambda_scale):
    """lambda_scale as NNCodec sees it (float32, widened to double); > 0 selects the rate term."""
    try:
        lam = float(lambda_scale)
    except (TypeError, ValueError):
        raise EncoderConfigError(f"lambda_scale must be a number, got {lambda_scale!r}") from None
    if not math.isfinite(lam):
        raise EncoderConfigError(f"lambda_scale must be finite, got {lambda_scale!r}")
    # REF-QUIRK: NNCodec receives lambda_scale as float32 (CABAC §8.3)
    with np.errstate(over="ignore"):
        lam = float(np.float32(lam))
    if not math.isfinite(lam):
        raise EncoderConfigError(f"lambda_scale {lambda_scale!r} overflows float32")
    return lam


def _check_flags(cabac_unary_length_minus1):
    """N' of the rate estimators: cabac_unary_length_minus1 greater-than flags (CABAC §15 item 4)."""
    if not isinstance(cabac_unary_length_minus1, (int, np.integer)) or \
            not 0 <= cabac_unary_length_minus1 <= 255:
        raise EncoderConfigError("cabac_unary_length_minus1 must be 0..255, "
                                 f"got {cabac_unary_length_minus1!r}")
    return int(cabac_unary_length_minus1)


def _as_weights(importance, n):
    """Distortion weights for the kernels: None, or C-contiguous float64 of n elements."""
    if importance is None:
        return None
    imp = np.ascontiguousarray(importance, dtype=np.float64).reshape(-1)
    if imp.shape[0] != n:
        raise EncoderConfigError(f"importance has {imp.shape[0]} elements, the tensor {n}")
    return imp


def _rate_scratch(nflags, memories):
    return np.empty(2 * memories * _quant_rate.context_count(nflags), dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# CABAC §9.3 overflow guard


def overflow_guard_qp(w32, qp_density):
    """The raised QP of the overflow guard: ceil(QP') for Delta_min = max|w| / (2^31 - 3) (CABAC §9.3)."""
    k = 1 << qp_density
    max_abs = float(np.max(np.abs(w32))) if w32.size else 0.0   # float32 maximum, exact in double
    min_step = max_abs / float(INT32_GUARD)
    # REF-QUIRK: baseQP and newQp are float32 variables in NNCodec's quantLayer
    base_qp = np.float32(math.floor(math.log2(min_step)) * k)
    new_qp = np.float32(float(base_qp) + ((min_step * k) / 2.0 ** float(base_qp / np.float32(k)) - k))
    return int(math.ceil(float(new_qp)))


def _run_guarded(kernel, w32, qp, qp_density):
    """Quantize; on int32 overflow raise QP once by the guard and quantize again (CABAC §9.3)."""
    if kernel(_qstep32(qp, qp_density)):
        return qp
    qp = overflow_guard_qp(w32, qp_density)
    # REF-QUIRK avoided: when max|w| is within float32 rounding of the guard's step, the raised QP
    # can still overflow and NNCodec's CHECK fails (it crashes); nnr takes the next QP that fits.
    # A failing kernel stops at the overflow test, and 2^qp_density QPs more double the step.
    for candidate in range(qp, qp + (1 << qp_density) + 1):
        if kernel(_qstep32(candidate, qp_density)):
            return candidate
    raise EncoderConfigError(f"tensor values too large for int32 levels even at QP {candidate}")


def guarded_qp(value_range, qp, qp_density, dq_flag, lambda_scale=0.0):
    """The QP that quantize_tcq (dq_flag) or quantize_uniform will return for a tensor whose values
    span value_range = (min, max), without quantizing it: every kernel's overflow test is monotone
    in |w| and the raised QP depends on max|w| only, so the two extremes decide (CABAC §9.3)."""
    max_abs = max(abs(float(value_range[0])), abs(float(value_range[1])))
    try:
        if max_abs < step_size(qp, qp_density) * 2.0 ** 30:     # levels far inside int32: no guard
            return int(qp)
    except SyntaxValueError:
        pass                                                     # the quantizer's own error follows
    ends = np.array(value_range, dtype=np.float32)
    if dq_flag:
        return quantize_tcq(ends, qp, qp_density, lambda_scale=lambda_scale)[1]
    return quantize_uniform(ends, qp, qp_density, lambda_scale=lambda_scale)[1]


# ---------------------------------------------------------------------------------------------
# CABAC §9.3 uniform, CABAC §8.3 trellis


def _checked_inputs(w, qp, qp_density, lambda_scale, importance):
    """(qp, qp_density, λ, w as float32, its flat view, weights or None), all checked."""
    qp, qp_density = _check_qp(qp, qp_density)
    lam = _check_lambda(lambda_scale)
    w32 = _as_float32(w)
    flat = w32.reshape(-1)
    return qp, qp_density, lam, w32, flat, _as_weights(importance, flat.shape[0])


def quantize_uniform(w, qp, qp_density, lambda_scale=0.0, scan=None, rows=None, row_width=None,
                     scan_order=0, cabac_unary_length_minus1=10, importance=None):
    """Uniform quantization (CABAC §9.3) -> (levels int32 in w's shape, QP after the overflow guard).

    importance: None (the reference), or a weight >= 0 per element multiplying its distortion.
    """
    qp, qp_density, lam, w32, flat, imp = _checked_inputs(w, qp, qp_density, lambda_scale, importance)
    levels = np.zeros(flat.shape[0], dtype=np.int32)
    if lam <= 0.0:
        # without rate term every element is independent: the scan (scan= (rows, row_width,
        # scan_order) or the separate arguments) only matters to the rate-term variant; every
        # weight > 0 keeps the nearest level, weight 0 makes all levels equal: take 0
        qp = _run_guarded(lambda q32: _quant.uniform_plain(flat, levels, q32), flat, qp, qp_density)
        if imp is not None:
            levels[imp == 0.0] = 0
        return levels.reshape(w32.shape), qp
    # CABAC §9.3 with rate term: one estimator walks the coding scan order
    if scan is not None:
        rows, row_width, scan_order = scan
    nflags = _check_flags(cabac_unary_length_minus1)
    order = _scan_for(w32.shape, flat.shape[0], rows, row_width, scan_order)
    scratch = _rate_scratch(nflags, 1)
    qp = _run_guarded(lambda q32: _quant_rate.uniform_rate(flat, order, levels, q32, lam, nflags, scratch, imp),
                      flat, qp, qp_density)
    return levels.reshape(w32.shape), qp


def _scan_for(shape, n, rows, row_width, scan_order, identity_none=False):
    """Coding scan positions of the CABAC §7 [rows, row_width] view (rows/row_width default: shape);
    None for the matrix scan (the identity) if identity_none."""
    if rows is None or row_width is None:
        rows, row_width = _coding_shape(shape)
    if rows * row_width != n:
        raise EncoderConfigError(f"rows {rows} x row_width {row_width} != {n} elements")
    order = _effective_scan_order(rows, row_width, scan_order)
    if order == 0 and identity_none:
        return None
    return _quant.scan_positions(rows, row_width, order)


def quantize_tcq(w, qp, qp_density, rows=None, row_width=None, scan_order=0, lambda_scale=0.0,
                 cabac_unary_length_minus1=10, importance=None):
    """Trellis-coded quantization (CABAC §8.3) -> (reconstruction indices int32, QP after the guard).

    importance: None (the reference), or a weight >= 0 per element multiplying its distortion.
    """
    qp, qp_density, lam, w32, flat, imp = _checked_inputs(w, qp, qp_density, lambda_scale, importance)
    out = np.zeros(flat.shape[0], dtype=np.int32)
    if lam <= 0.0:
        # the plain trellis walks w itself for the matrix scan and keeps 2 bytes per position
        scan = _scan_for(w32.shape, flat.shape[0], rows, row_width, scan_order, identity_none=True)
        decisions = np.empty(2 * flat.shape[0], dtype=np.uint8)
        qp = _run_guarded(lambda q32: _quant.tcq_plain(flat, scan, out, q32, decisions, imp), flat, qp,
                          qp_density)
        return out.reshape(w32.shape), qp
    # CABAC §8.3 with rate term: 8 estimator memories, one per trellis state
    scan = _scan_for(w32.shape, flat.shape[0], rows, row_width, scan_order)
    decisions = np.empty(8 * flat.shape[0], dtype=np.uint8)
    nflags = _check_flags(cabac_unary_length_minus1)
    scratch = _rate_scratch(nflags, 8)
    qp = _run_guarded(lambda q32: _quant_rate.tcq_rate(flat, scan, out, q32, lam, nflags, decisions,
                                                       scratch, imp), flat, qp, qp_density)
    return out.reshape(w32.shape), qp


def quantize(w, qp, qp_density, dq_flag, scan_order=0, lambda_scale=0.0,
             cabac_unary_length_minus1=10):
    """NNCodec's quantLayer: TCQ when dq_flag else uniform, on the CABAC §7 coding shape of w."""
    if dq_flag:
        return quantize_tcq(w, qp, qp_density, scan_order=scan_order, lambda_scale=lambda_scale,
                            cabac_unary_length_minus1=cabac_unary_length_minus1)
    return quantize_uniform(w, qp, qp_density, lambda_scale=lambda_scale, scan_order=scan_order,
                            cabac_unary_length_minus1=cabac_unary_length_minus1)


# ---------------------------------------------------------------------------------------------
# CABAC §9.4 integer-aligned bit depth


def _is_all_zero_or_scalar(w):
    a = np.asarray(w)
    if a.ndim == 0:
        return np.issubdtype(a.dtype, np.integer)
    return bool(np.all(a == 0))


def effective_bitdepth(bitdepth, is_weight=True):
    """NNCodec codes non-weight tensors with at least 8 bits (CABAC §9.4)."""
    if not isinstance(bitdepth, (int, np.integer)) or not 1 <= bitdepth <= 31:
        raise EncoderConfigError(f"bitdepth must be 1..31, got {bitdepth!r}")
    return int(bitdepth) if (bitdepth > 7 or is_weight) else 8


def _is_unsigned(w, unsigned_support):
    return bool(unsigned_support) and not np.any(np.asarray(w) < 0)


def bitdepth_qp(w, bitdepth, qp_density, is_weight=True, unsigned_support=True):
    """(QP, (lo, hi) level clip) of the integer-aligned bit depth (CABAC §9.4).

    The QP maps the 99.95th percentile of |w| to the largest level of the bit depth; all-zero
    tensors get QP 0.
    """
    _check_qp(0, qp_density)
    w32 = _as_float32(w)
    clip = bitdepth_range(w32, bitdepth, is_weight, unsigned_support)
    if _is_all_zero_or_scalar(w):
        return 0, clip
    denom = clip[1] if clip[0] == 0 else -clip[0] - 1      # 2^bw - 1 or 2^(bw-1) - 1
    a = np.abs(w32).astype(np.float64)
    delta = float(np.percentile(a, 99.95)) / denom if denom else 0.0
    if delta == 0.0 and denom:
        delta = float(np.max(a)) / denom
    if delta == 0.0:
        # NNCodec divides by zero here (bit depth 1, signed); its QP clips to the minimum
        qp = -float("inf")
    else:
        k = 1 << qp_density
        base_qp = math.floor(math.log2(delta)) * k
        qp = base_qp + ((delta * k) / 2.0 ** (base_qp / k) - k)
    max_qp = 1 << (5 + qp_density)
    if np.round(qp) > max_qp - 1:
        # The reference clamps the QP here and codes levels that saturate at the bit depth: the
        # tensor would decode far from its values (spec/README.md). The largest step is 2^32.
        raise EncoderConfigError(
            f"bitdepth {bitdepth}: values up to {float(np.max(a)):.6g} need a step size beyond the "
            f"largest the bit-depth mode signals (2^32, QP {max_qp - 1} at qp_density {qp_density}); "
            "code the tensor without bitdepth (qp=...) or as raw_float")
    qp = min(max(qp, -max_qp), max_qp - 1)
    return int(np.round(qp)), clip     # REF-QUIRK: np.round, i.e. ties to even


def bitdepth_range(w, bitdepth, is_weight=True, unsigned_support=True):
    """(lo, hi) of the levels: unsigned when w has no negative value (CABAC §9.4)."""
    bw = effective_bitdepth(bitdepth, is_weight)
    if _is_unsigned(w, unsigned_support):
        return 0, (1 << bw) - 1
    return -(1 << (bw - 1)), (1 << (bw - 1)) - 1


def clip_to_bitdepth(levels, w, bitdepth, is_weight=True, unsigned_support=True):
    """Clip levels (or DQ reconstruction indices) to the bit depth's range (CABAC §9.4)."""
    lo, hi = bitdepth_range(w, bitdepth, is_weight, unsigned_support)
    return np.clip(levels, lo, hi).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# CABAC §9.5 codebook


def codebook_header_bits(codebook, cb_zero_offset, codebook_egk):
    """Bits of codebook() (HLS §8.3) for these entries, measured by writing it from the syntax tables."""
    from nnr_core.bitstream.writer import BitWriter
    from nnr_core.syntax.walker import Walker
    writer = BitWriter()
    Walker("write", writer).run("codebook", {"Codebook": [int(c) for c in codebook],
                                             "CbZeroOffset": int(cb_zero_offset), "codebook_egk": int(codebook_egk)})
    return writer.pos


def best_codebook_egk(codebook, cb_zero_offset):
    """codebook_egk 0..15 with the fewest header bits, first minimum (CABAC §9.5)."""
    best_egk, best_bits = 0, None
    for egk in range(EGK_MAX + 1):
        bits = codebook_header_bits(codebook, cb_zero_offset, egk)
        if best_bits is None or bits < best_bits:
            best_egk, best_bits = egk, bits
    return best_egk


def dq_equivalent_qp_offset(qp_density):
    """NNCodec lowers the codebook QP by 2^qp_density (half the step) when DQ was requested."""
    return 1 << qp_density


def codebook_quantize(w, qp, qp_density, dq_requested, trial_encode, bitdepth=None,
                      is_weight=True, unsigned_support=True, mode2_encode=None, scan_order=0,
                      clip=None, rows=None, row_width=None, lambda_scale=0.0,
                      cabac_unary_length_minus1=10):
    """NNCodec's codebook quantization (CABAC §9.5) -> dict(symbols, codebook, cb_zero_offset, codebook_egk, qp).

    trial_encode(symbols_k, codebook_size, cb_zero_offset) -> payload bytes; NNCodec's offset
    trial encodes with gpi-0 rules (unbounded binarization), matrix scan, no DQ, N' greater-than
    flags and parameter-set optimisation on. With mode2_encode(values, dq_flag) -> payload bytes
    (the real encoder settings, no row skipping), "codebook mode 2" also tries the uniform
    alternative and returns approx_method 'uniform' with its levels when that is smaller.
    The levels are clipped to `clip` (lo, hi), or to the range of `bitdepth` if given (CABAC §9.4).
    """
    qp, qp_density = _check_qp(qp, qp_density)
    w32 = _as_float32(w)
    enc_qp = qp - (dq_equivalent_qp_offset(qp_density) if dq_requested else 0)
    # NNCodec's codebook path calls quantLayer with the tensor's scan order and lambda_scale too
    levels, cb_qp = quantize_uniform(w32, enc_qp, qp_density, lambda_scale=lambda_scale, rows=rows,
                                     row_width=row_width, scan_order=scan_order,
                                     cabac_unary_length_minus1=cabac_unary_length_minus1)
    if clip is None and bitdepth is not None:
        clip = bitdepth_range(w32, bitdepth, is_weight, unsigned_support)
    if clip is not None:
        levels = np.clip(levels, clip[0], clip[1]).astype(np.int32)
    codebook, index = np.unique(levels, return_inverse=True)
    index = index.reshape(levels.shape).astype(np.int32)
    cb_zero_offset, best = 0, None
    for offset in range(len(codebook)):
        size = trial_encode(index - offset, len(codebook), offset)
        if best is None or size < best:
            best, cb_zero_offset = size, offset
    symbols = index - cb_zero_offset
    egk = best_codebook_egk(codebook, cb_zero_offset)
    result = dict(approx_method="codebook", symbols=symbols, codebook=[int(c) for c in codebook],
                  cb_zero_offset=cb_zero_offset, codebook_egk=egk, qp=cb_qp, dq_flag=0)
    if mode2_encode is None:
        return result
    uni_levels, uni_qp, dq_flag = levels, cb_qp, 0
    if dq_requested:
        uni_levels, uni_qp = quantize_tcq(w32, qp, qp_density, rows, row_width, scan_order,
                                          lambda_scale, cabac_unary_length_minus1)
        dq_flag = 1
        if clip is not None:
            uni_levels = np.clip(uni_levels, clip[0], clip[1]).astype(np.int32)
    bytes_uni = mode2_encode(uni_levels, dq_flag)
    # REF-QUIRK: NNCodec adds the codebook header in *bits* to the payload in bytes
    bytes_cb = mode2_encode(symbols, 0) + codebook_header_bits(codebook, cb_zero_offset, egk)
    if bytes_cb < bytes_uni:
        return result
    return dict(approx_method="uniform", levels=uni_levels, qp=uni_qp, dq_flag=dq_flag)
