"""Pure-Python twin of the DeepCABAC decoder: levels and the per-tensor procedure.

Implements CABAC §5 (binarization), CABAC §6 (context layout, selection, signalling),
CABAC §7 (scans, row skipping), CABAC §8.1/8.2 (dependent quantization) and procedure B of
CABAC §12, on top of the engine of `pytwin.CabacDecoder` (passed in as `dec`).
"""
import math

import numpy as np

from nnr_core.errors import ConstraintViolationError, SyntaxValueError
from nnr_core.cabac.params import TensorResult

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
OVERREAD_BAIL_OUT = 4           # bytes fed past the payload end before decoding stops
# A level takes at least one regular bin, a regular bin at least log2(351/349) > 1/128 bit
# (rLPS 2 at R = 351, Appendix A.1); slack for P's rounding (CABAC §3.8).
BINS_PER_BIT = 128
CAPACITY_SLACK_BITS = 16

# CABAC §6.1, NNCodec-2 layout (offsets; those after the greater-than flags depend on N).  The
# Cython modules have the same names in _engine.pxd.
CTX_SIG = 0                     # 3·s + c
CTX_SIG_TCA = 24                # 24 + 2·s + (abs(b) > 1)
CTX_SIG_HDSP = 40               # 40 + s
CTX_SIGN = 48                   # 48 + c
CTX_SIGN_TCA_NEG = 51           # b < 0
CTX_SIGN_TCA_POS = 52           # b > 0
CTX_GTX = 53                    # 53 + 2j + (k < 0)
CTX_REM_COUNT = 32              # remainder prefix bins from ctx_rem(N) (only i <= 30 is used)


def ctx_gtx_tca(N):
    """First TCA greater-than context, 53 + 2N (CABAC §6.1)."""
    return CTX_GTX + 2 * N


def ctx_rem(N):
    """First remainder-prefix context, 53 + 4N (CABAC §6.1)."""
    return CTX_GTX + 4 * N


def ctx_param_set_flag(N):
    """Context of param_set_flag, 87 + 4N (CABAC §6.1): after remainder contexts and 2 unused."""
    return ctx_rem(N) + CTX_REM_COUNT + 2


def ctx_row_skip(N):
    """Context of row_skip_list, 89 + 4N (CABAC §6.1)."""
    return ctx_rem(N) + CTX_REM_COUNT + 4


def num_contexts(N):
    """Size of the context memory, 90 + 4N (CABAC §6.1)."""
    return ctx_rem(N) + CTX_REM_COUNT + 5


# CABAC §8.1: NEXT[s][parity].
NEXT = ((0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6))


def neighbour_class(neighbour):
    """Neighbour class c of CABAC §6.1: 0 zero, 1 negative, 2 positive."""
    return 0 if neighbour == 0 else (1 if neighbour < 0 else 2)


def ctx_sig(s, c, b, h):
    """Context of sig_flag (CABAC §6.2): HDSP history first, then TCA reference, then state, neighbour."""
    if h:
        return CTX_SIG_HDSP + s
    if b != 0:
        return CTX_SIG_TCA + 2 * s + (1 if abs(b) > 1 else 0)
    return CTX_SIG + 3 * s + c


def ctx_sign(c, b):
    """Context of sign_flag (CABAC §6.2)."""
    if b != 0:
        return CTX_SIGN_TCA_NEG if b < 0 else CTX_SIGN_TCA_POS
    return CTX_SIGN + c


def ctx_gtx(N, j, sign, b):
    """Context of abs_level_greater_x[j] (CABAC §6.2)."""
    if b != 0:
        return ctx_gtx_tca(N) + 2 * j + (0 if abs(b) >= j else 1)
    return CTX_GTX + 2 * j + sign


def block_dim(scan_order):
    """CABAC §7.2 BlockDim of a block scan (scan order 1..4): 2^(scan_order + 2)."""
    return 4 << scan_order


def num_block_rows(rows, scan_order):
    """CABAC §7.2 block rows: ceil(Rows / BlockDim); 1 for the matrix scan (effective order 0)."""
    return -(-rows // block_dim(scan_order)) if scan_order else 1


def decode_level(dec, s, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
    """One level k: binarization CABAC §5.1/5.2, contexts CABAC §6.2 (NNCodec-2)."""
    check_codebook(codebook_size, cb_zero_offset)
    if codebook_size == 1:
        return 0                            # CABAC §5.2: no bins at all
    bounded = codebook_size > 0
    c = neighbour_class(neighbour)
    if not dec.decode_bin(ctx_sig(s, c, b, h)):         # sig_flag
        return 0
    # sign_flag (inferred at either end of a codebook)
    if bounded and cb_zero_offset == 0:
        sign = 0
    elif bounded and cb_zero_offset == codebook_size - 1:
        sign = 1
    else:
        sign = dec.decode_bin(ctx_sign(c, b))
    # M: largest |k| for this sign; unbounded without a codebook
    if bounded:
        M = cb_zero_offset if sign else codebook_size - 1 - cb_zero_offset
    else:
        M = math.inf
    # abs_level_greater_x[j]
    v = 1
    flag = 0
    if M > 1:
        j = 0
        while True:
            flag = dec.decode_bin(ctx_gtx(N, j, sign, b))
            v += flag
            if not (flag and j < N - 1 and v < M):
                break
            j += 1
    # abs_remainder: Exp-Golomb prefix (context-coded, at most 31 ones) and bypass suffix
    if flag and v < M:
        t = 0
        i = 0
        while True:
            prefix_bin = dec.decode_bin(ctx_rem(N) + i)
            if prefix_bin:
                v += 1 << t
                t += 1
            if not (prefix_bin and i < 30 and v + (1 << t) <= M):
                break
            i += 1
        if t:
            v += dec.decode_bypass(t)
        if v > INT32_MAX + sign:          # -2^31 (INT32_MIN) fits
            raise dec.error("level magnitude exceeds int32", "abs_remainder")
    return -v if sign else v


def signalled_contexts(N, dq_flag, tca, hdsp, codebook_size, cb_zero_offset, variant):
    """List of (context, coded) of the parameter-set signalling, in order (CABAC §6.4)."""
    if variant == 1:
        # NNCodec-1: sig, sign, greater-than and all 32 remainder contexts, every one coded.
        sig = range(24) if dq_flag else range(3)
        ctxs = [*sig, *range(CTX_SIGN, CTX_SIGN + 3), *range(CTX_GTX, CTX_GTX + 2 * N),
                *range(ctx_rem(N), ctx_rem(N) + CTX_REM_COUNT)]
        return [(x, True) for x in ctxs]
    cb1 = codebook_size != 1
    sgn = cb1 and not (codebook_size > 0 and cb_zero_offset in (0, codebook_size - 1))
    if codebook_size > 0:
        M = max(cb_zero_offset, codebook_size - 1 - cb_zero_offset)
    else:
        M = None                            # unbounded
    out = [(CTX_SIG + x, cb1) for x in range(24 if dq_flag else 3)]                 # group 1
    if tca:
        out += [(CTX_SIG_TCA + x, cb1) for x in range(16 if dq_flag else 2)]        # group 2
    if hdsp:
        out += [(CTX_SIG_HDSP + x, cb1) for x in range(8 if dq_flag else 1)]        # group 3
    out += [(CTX_SIGN + x, sgn) for x in range(5 if tca else 3)]                    # group 4
    out += [(CTX_GTX + a, M is None or a < 2 * M) for a in range(2 * N)]            # group 5
    if tca:
        out += [(CTX_GTX + a, M is None or a < 2 * (M - 1) + 2 * N)                 # group 6
                for a in range(2 * N, 4 * N)]
    out += [(ctx_rem(N) + a, M is None or N + (1 << (a + 1)) - 2 < M)                # group 7
            for a in range(CTX_REM_COUNT - 1)]
    return out


def decode_param_sets(dec, N, dq_flag, tca, hdsp, codebook_size, cb_zero_offset, variant):
    """Context parameter-set signalling (CABAC §6.4): param_set_flag, param_set_idx_minus1; stops
    once it has read past the payload end by more than OVERREAD_BAIL_OUT bytes."""
    for ctx, coded in signalled_contexts(N, dq_flag, tca, hdsp, codebook_size,
                                         cb_zero_offset, variant):
        k = 0
        if coded and dec.decode_bin(ctx_param_set_flag(N)):
            k = 1 + dec.decode_bypass(3)
        dec.set_context_param_set(ctx, k)
        if dec.overread > OVERREAD_BAIL_OUT:
            raise dec.error("payload ends inside the context parameter signalling", "param_set_flag")


def _check_array(a, dtypes, size, name):
    """Application state array (CABAC §10) of an allowed dtype and the tensor's size."""
    dtypes = tuple(np.dtype(d) for d in dtypes)
    if not isinstance(a, np.ndarray) or a.dtype not in dtypes or a.size != size:
        raise ConstraintViolationError(f"{name} must be {dtypes[0].name}[{size}]",
                                       element=name)


def check_codebook(codebook_size, cb_zero_offset):
    """CbZeroOffset inside the codebook, or both 0 without one (CABAC §9.5)."""
    if not (0 <= cb_zero_offset < codebook_size if codebook_size > 0
            else codebook_size == 0 and cb_zero_offset == 0):
        raise SyntaxValueError("codebook bounds inconsistent", element="cb_zero_offset",
                               value=(codebook_size, cb_zero_offset))


def validate(t, variant):
    """Check a TensorCoding before any bin is decoded (README: invalid TensorCoding values)."""
    if variant not in (1, 2):
        raise SyntaxValueError("unknown decoder variant", element="variant", value=variant,
                               allowed="1, 2")
    if t.general_profile_idc not in (0, 1):
        raise SyntaxValueError("general_profile_idc out of range", element="general_profile_idc",
                               value=t.general_profile_idc, allowed="0, 1")
    if variant == 1 and t.general_profile_idc != 0:
        raise ConstraintViolationError("the NNCodec-1 variant exists only for "
                                       "general_profile_idc 0", element="general_profile_idc",
                                       value=t.general_profile_idc, allowed="0")
    if t.rows < 0 or t.row_width < 0:
        raise SyntaxValueError("negative tensor dimension", element="tensor_dimensions",
                               value=(t.rows, t.row_width))
    if not 0 <= t.qp_density <= 7:
        raise SyntaxValueError("qp_density out of range", element="qp_density",
                               value=t.qp_density, allowed="0..7")
    if t.dq_flag not in (0, 1):
        raise SyntaxValueError("dq_flag out of range", element="dq_flag", value=t.dq_flag,
                               allowed="0, 1")
    if not 0 <= t.cabac_unary_length_minus1 <= 255:
        raise SyntaxValueError("cabac_unary_length_minus1 out of range",
                               element="cabac_unary_length_minus1",
                               value=t.cabac_unary_length_minus1, allowed="0..255")
    two_d_like = t.ndim >= 2 and t.rows > 1 and t.row_width > 1
    if not 0 <= t.scan_order <= 15 or (two_d_like and t.scan_order > 4):
        raise SyntaxValueError("scan_order out of range", element="scan_order",
                               value=t.scan_order, allowed="0..4")
    check_codebook(t.codebook_size, t.cb_zero_offset)
    if t.codebook_size and (t.general_profile_idc == 0 or t.dq_flag):
        # CABAC §1: CodebookSize is 0 for gpi 0; CABAC §9.5: codebook tensors have dq_flag 0.
        raise ConstraintViolationError("codebook with general_profile_idc 0 or dq_flag 1",
                                       element="codebook_size", value=t.codebook_size)
    if t.tca_reference is not None:
        if t.general_profile_idc != 1:
            raise ConstraintViolationError("TCA needs general_profile_idc 1",
                                           element="temporal_context_modeling_flag")
        _check_array(t.tca_reference, (np.int32,), t.num_elements, "tca_reference")
    if t.hdsp_history is not None:
        _check_array(t.hdsp_history, (np.uint8, np.bool_), t.num_elements, "hdsp_history")


def scan_segments(rows, row_width, scan_order):
    """Row segments in coding order (CABAC §7.1/7.2): yields (block_row, r, c_first, c_last)."""
    if scan_order == 0:
        for r in range(rows):
            yield 0, r, 0, row_width - 1
        return
    BD = block_dim(scan_order)
    for block_row, r0 in enumerate(range(0, rows, BD)):
        for c0 in range(0, row_width, BD):
            for r in range(r0, min(rows, r0 + BD)):
                yield block_row, r, c0, min(row_width, c0 + BD) - 1


def decode_tensor(dec, t, variant=2):
    """Procedure B of CABAC §12 for one tensor (NNCodec-2; NNCodec-1 as variant 1, CABAC §11)."""
    validate(t, variant)
    dec.check_start()
    N = t.cabac_unary_length_minus1 + 1
    rows, row_width = t.rows, t.row_width
    gpi = t.general_profile_idc
    # B.1 qp_offset: 6 + QpDensity bypass bins, two's complement
    qp_offset = None
    if t.has_qp_offset:
        n = 6 + t.qp_density
        u = dec.decode_bypass(n)
        qp_offset = u - (1 << n) if u >= 1 << (n - 1) else u
    # B.2 dq, effective scan order, TCA
    dq = t.dq_flag
    scan_order = t.scan_order if t.ndim >= 2 and rows > 1 and row_width > 1 else 0
    tca_ref = t.tca_reference.reshape(-1) if t.tca_reference is not None else None
    codebook_size, cb_zero_offset = t.codebook_size, t.cb_zero_offset
    # B.3 context memory
    dec.init_contexts(num_contexts(N))
    # B.4 edition-2 flags and row-skip list
    hdsp = row_skip = 0
    row_skip_list = None
    if gpi == 1 and row_width > 1 and rows > 1 and codebook_size != 1:
        if t.parent_node_id_present_flag:
            hdsp = dec.decode_bypass(1)
        row_skip = dec.decode_bypass(1)
        if row_skip:
            row_skip_list = np.zeros(rows, dtype=np.uint8)
            for r in range(rows):
                row_skip_list[r] = dec.decode_bin(ctx_row_skip(N))
                if dec.overread > OVERREAD_BAIL_OUT:
                    raise dec.error("payload ends inside the row-skip list", "row_skip_list")
    if hdsp and t.hdsp_history is None:
        # CABAC §10.2: NNCodec would silently decode without history and desynchronise.
        raise ConstraintViolationError("hist_dep_sig_prob_enabled_flag = 1 but no history",
                                       element="hist_dep_sig_prob_enabled_flag",
                                       bit_offset=dec.P + 9)
    history = t.hdsp_history.reshape(-1) if hdsp else None
    # B.5 context parameter sets
    decode_param_sets(dec, N, dq, tca_ref is not None, hdsp, codebook_size, cb_zero_offset,
                      variant)
    no_bins = gpi == 1 and codebook_size == 1
    # Every level still to come takes a bin: more than the rest of the payload can hold is an
    # error before decoding them (a corrupt stream's work stays proportional to its payload).
    coded = 0 if no_bins else (rows - (int(row_skip_list.sum()) if row_skip else 0)) * row_width
    if coded > BINS_PER_BIT * (8 * len(dec.payload) - dec.P + CAPACITY_SLACK_BITS):
        raise dec.error("the rest of the payload cannot hold the tensor's levels", "payload length")
    # B.6 start of the levels
    neighbour = s = 0
    block_rows = num_block_rows(rows, scan_order)
    if scan_order and (block_rows > 1 or variant == 1):
        dec.reset_range()
    entry_points = []
    p_block_row = dec.P                     # block row 0 starts after the signalling (CABAC §3.8)
    levels = np.zeros(rows * row_width, dtype=np.int32)
    current_block_row = 0
    # B.7 scan positions, one row segment at a time
    for block_row, r, c_first, c_last in scan_segments(rows, row_width, scan_order):
        if dec.overread > OVERREAD_BAIL_OUT:
            raise dec.error("payload ends too early", "payload length")
        if block_row != current_block_row:
            # B.7e block-row reset (CABAC §6.3, CABAC §3.6) and its entry point (CABAC §3.8)
            current_block_row = block_row
            dec.reset_contexts()
            neighbour = 0
            dec.reset_range()
            entry_points.append((dec.P - p_block_row, dec.V >> 7, s))
            p_block_row = dec.P
        if row_skip and row_skip_list[r]:
            # B.7a CABAC §7.3: RowWidth parity-0 DQ transitions; NEXT[.][0] has order 4
            if dq:
                for _ in range(row_width % 4):
                    s = NEXT[s][0]
            continue
        for col in range(c_first, c_last + 1):
            if dec.overread > OVERREAD_BAIL_OUT:    # zero bytes past the end: stop here
                raise dec.error("payload ends too early", "payload length")
            pos = r * row_width + col
            b = int(tca_ref[pos]) if tca_ref is not None else 0
            h = 1 if history is not None and history[pos] else 0
            k = 0 if no_bins else decode_level(dec, s, neighbour, b, h, N, codebook_size,
                                               cb_zero_offset)
            if dq:                          # index i (CABAC §8.2), then the transition (CABAC §8.1)
                i = 2 * k - (0 if k == 0 else (1 if k > 0 else -1)) * (s & 1)
                if not INT32_MIN <= i <= INT32_MAX:
                    raise dec.error("reconstruction index exceeds int32", "abs_remainder")
                s = NEXT[s][k & 1]
            else:
                i = k
            levels[pos] = i
            neighbour = k
    if dec.overread > OVERREAD_BAIL_OUT:        # the last row segment ran past the end
        raise dec.error("payload ends too early", "payload length")
    return TensorResult(qp_offset=qp_offset, levels=levels,
                        hist_dep_sig_prob_enabled_flag=hdsp, row_skip_enabled_flag=row_skip,
                        row_skip_list=row_skip_list, entry_points=entry_points)
