"""Pure-Python twin of the DeepCABAC entropy encoder (CABAC §3.7, CABAC §5, CABAC §6, CABAC §7,
CABAC §8.2, CABAC §13), bit-exact with NNCodec 2.1.3 (variant 2) and NNCodec 1.x (variant 1).

The exact mirror of the decoder twin (`pytwin`, `pytwin_levels`): same context layout, same
signalling lists, same scans, row skipping, DQ, TCA, HDSP and codebook rules.  Written for
clarity; the differential tests run it in lockstep with the Cython encoder `_encoder.pyx`, whose
argument checks (`prepare`) live here so both report the same errors.  API: README.md.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnr_core.errors import EncoderConfigError, NNRError
from nnr_core.cabac import pytwin, pytwin_levels
from nnr_core.cabac.bitcost import SCALE, bin_cost
from nnr_core.cabac.params import TensorEncoding, VARIANT_NNCODEC1
from nnr_core.cabac.pytwin import CURVE, PARAM_SETS, RLPS_TABLE, Context
from nnr_core.cabac.pytwin_levels import (NEXT, ctx_gtx, ctx_param_set_flag, ctx_rem,
                                          ctx_row_skip, ctx_sig, ctx_sign, neighbour_class,
                                          num_block_rows, num_contexts, scan_segments,
                                          signalled_contexts)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
PARAM_SET_PENALTY = 3 * SCALE       # CABAC §6.5 step 4: sets 1..8 pay for their 3 bypass bins
NUM_PARAM_SETS = 9


# --- argument checks, shared with the Cython encoder ---------------------------------------------

@dataclass
class Prepared:
    """A validated TensorEncoding with everything the coding loops need (CABAC §12 procedure B)."""

    t: TensorEncoding
    N: int
    rows: int
    W: int                          # RowWidth
    dq: int
    eff_scan: int                   # effective scan order (CABAC §2)
    n_brows: int                    # block rows (1 for the matrix scan)
    levels: np.ndarray              # int32[rows*W], C-contiguous
    tca: Optional[np.ndarray]       # int32[rows*W] or None
    hist: Optional[np.ndarray]      # uint8[rows*W] iff hist_dep_sig_prob_enabled_flag = 1
    edition2_flags: bool            # CABAC §2 steps 3a/3b present
    parent: int
    hdsp_flag: int
    rowskip_flag: int
    skip: Optional[np.ndarray]      # uint8[rows]: row_skip_list (all-zero rows) iff rowskip_flag
    qp_bits: int                    # 6 + QpDensity, 0 without qp_offset
    qp_offset: int
    no_bins: bool                   # gpi 1 and CodebookSize 1
    cbsize: int
    cbzero: int
    param_opt: bool


def _flag(value, name):
    if value in (0, 1) and not isinstance(value, float):
        return int(value)
    raise EncoderConfigError(f"{name} must be 0 or 1, not {value!r}")


def prepare(t, variant):
    """Check one TensorEncoding (EncoderConfigError on invalid input) and derive its coding."""
    if not isinstance(t, TensorEncoding):
        raise EncoderConfigError(f"TensorEncoding expected, not {type(t).__name__}")
    c = t.coding
    try:
        pytwin_levels.validate(c, variant)
    except NNRError as err:
        raise EncoderConfigError(f"invalid TensorCoding: {err}") from None
    rows, W = c.rows, c.row_width
    n = rows * W
    N = c.cabac_unary_length_minus1 + 1
    gpi = c.general_profile_idc
    levels = np.asarray(t.levels)
    if levels.dtype.kind not in "iub" or levels.size != n:
        raise EncoderConfigError(f"levels must be an integer array of {n} elements "
                                 f"(got {levels.dtype} with {levels.size})")
    wide = levels.reshape(-1).astype(np.int64)
    lo = INT32_MIN
    cbsize, cbzero = c.codebook_size, c.cb_zero_offset
    if cbsize > 0:
        lo, hi = max(lo, -cbzero), min(INT32_MAX, cbsize - 1 - cbzero)
    else:
        hi = INT32_MAX
    if n and (wide.min() < lo or wide.max() > hi):
        pos = int(np.flatnonzero((wide < lo) | (wide > hi))[0])
        raise EncoderConfigError(f"level {int(wide[pos])} at position {pos} "
                                 f"(row {pos // W}, column {pos % W}) outside {lo}..{hi}")
    levels = np.ascontiguousarray(wide.astype(np.int32))
    # qp_offset: 6 + QpDensity bits, two's complement; never wrapped (CABAC §2 step 1).
    qp_bits = qp_offset = 0
    if c.has_qp_offset:
        qp_bits = 6 + c.qp_density
        q = t.qp_offset
        if q is None or isinstance(q, (bool, float)) or not isinstance(q, (int, np.integer)):
            raise EncoderConfigError(f"qp_offset must be an integer, not {q!r}")
        if not -(1 << (qp_bits - 1)) <= q < 1 << (qp_bits - 1):
            raise EncoderConfigError(f"qp_offset {q} does not fit {qp_bits} bits "
                                     f"({-(1 << (qp_bits - 1))}..{(1 << (qp_bits - 1)) - 1})")
        qp_offset = int(q)
    elif t.qp_offset is not None:
        raise EncoderConfigError("qp_offset given for a payload type without qp_offset")
    # CABAC §2 steps 3a/3b: the edition-2 flags, used only where they are coded.
    edition2 = gpi == 1 and W > 1 and rows > 1 and cbsize != 1
    parent = 1 if c.parent_node_id_present_flag else 0
    hdsp = _flag(t.hist_dep_sig_prob_enabled_flag, "hist_dep_sig_prob_enabled_flag")
    rowskip = _flag(t.row_skip_enabled_flag, "row_skip_enabled_flag")
    hdsp = hdsp if edition2 and parent else 0
    rowskip = rowskip if edition2 else 0
    hist = None
    if hdsp:
        if c.hdsp_history is None:
            raise EncoderConfigError("hist_dep_sig_prob_enabled_flag = 1 needs the HDSP history "
                                     "(TensorCoding.hdsp_history)")
        hist = np.ascontiguousarray(c.hdsp_history.reshape(-1)).view(np.uint8)
    skip = None
    if rowskip:
        # NNCodec: row_skip_list[r] = 1 exactly for the all-zero rows (CABAC §7.3).
        skip = (~levels.reshape(rows, W).any(axis=1)).astype(np.uint8)
    tca = None
    if c.tca_reference is not None:
        tca = np.ascontiguousarray(c.tca_reference.reshape(-1), dtype=np.int32)
    eff_scan = c.scan_order if c.ndim >= 2 and rows > 1 and W > 1 else 0
    n_brows = num_block_rows(rows, eff_scan)
    no_bins = gpi == 1 and cbsize == 1
    return Prepared(t, N, rows, W, c.dq_flag, eff_scan, n_brows, levels, tca, hist, edition2,
                    parent, hdsp, rowskip, skip, qp_bits, qp_offset, no_bins, cbsize, cbzero,
                    bool(t.param_opt) and cbsize != 1)


def index_to_level(i, s):
    """CABAC §8.2 encoder mapping i -> k with the coding-time state s. REF-QUIRK: an index of the
    wrong parity for Q(s & 1) is rounded by the same formula, as NNCodec does (bit-depth clipping of
    TCQ output, row skipping with block scans: CABAC §15.2)."""
    if i == 0:
        return 0
    return (i + (s & 1)) >> 1 if i > 0 else (i - (s & 1)) >> 1


# --- shadow models of the parameter-set optimisation (CABAC §6.5) --------------------------------

class Shadow:
    """Nine models of one context, one per parameter set, and their accumulated bit estimates."""

    __slots__ = ("S0", "S1", "cost")

    def __init__(self):
        self.cost = [0] * NUM_PARAM_SETS
        self.reset()

    def reset(self):
        """Back to the nine sets' initial states; the costs keep accumulating (CABAC §6.5.2)."""
        self.S0 = [p[2] for p in PARAM_SETS]
        self.S1 = [p[3] for p in PARAM_SETS]

    def code(self, bin_val):
        """Charge every set the bin's CABAC §4.6 estimate, then update every model (CABAC §4.4)."""
        g = 1 if bin_val else -1
        for k, (sh0, sh1, _, _) in enumerate(PARAM_SETS):
            S0, S1 = self.S0[k], self.S1[k]
            self.cost[k] += bin_cost(S1 + 16 * S0, bin_val)
            self.S0[k] = S0 + g * (CURVE[16 + ((g * S0) >> 3)] >> sh0)
            self.S1[k] = S1 + g * (CURVE[16 + ((g * S1) >> 7)] >> sh1)

    def best(self):
        """Cheapest set, sets 1..8 charged 3 bits extra; first minimum wins (CABAC §6.5.4)."""
        best, best_cost = 0, self.cost[0]
        for k in range(1, NUM_PARAM_SETS):
            if self.cost[k] + PARAM_SET_PENALTY < best_cost:
                best, best_cost = k, self.cost[k] + PARAM_SET_PENALTY
        return best


def pseudo_level(shadow, i, s, neighbour, b, h, N):
    """Pseudo-code one position for the optimisation.  REF-QUIRK (CABAC §6.5.3): NNCodec binarizes
    the reconstruction index i (not k), always with the unbounded binarization of CABAC §5.1 and
    without the bypass suffix."""
    c = neighbour_class(neighbour)
    shadow[ctx_sig(s, c, b, h)].code(i != 0)
    if i == 0:
        return
    shadow[ctx_sign(c, b)].code(i < 0)
    a = abs(i)
    for j in range(N):
        flag = a > j + 1
        shadow[ctx_gtx(N, j, 1 if i < 0 else 0, b)].code(flag)
        if not flag:
            return
    rem = a - (N + 1)                           # Exp-Golomb-0 prefix: t ones, then a zero
    t = (rem + 1).bit_length() - 1
    for x in range(t):
        shadow[ctx_rem(N) + x].code(1)
    shadow[ctx_rem(N) + t].code(0)


# --- the encoder ----------------------------------------------------------------------------------

class CabacEncoder:
    """DeepCABAC encoder: engine (CABAC §3.7) plus one tensor's context memory (CABAC §6.3)."""

    def __init__(self):
        """CABAC §3.7 initialisation, once per NDU payload."""
        self.L, self.R, self.BL, self.NB, self.buffered = 0, 510, 23, 0, 0
        self.out = bytearray()
        self.ctx = []
        self.finished = False
        self.rounded = 0        # DQ indices of the wrong parity coded so far (rounded to a level)

    # --- engine (CABAC §3.7) -----------------------------------------------------------------

    def _write_out(self):
        """Byte output with carry handling: 0xFF bytes stay pending until the carry is known."""
        lead = self.L >> (24 - self.BL)
        self.BL += 8
        self.L &= 0xFFFFFFFF >> self.BL
        if lead == 0xFF:
            self.NB += 1
        elif self.NB > 0:
            carry = lead >> 8
            self.out.append((self.buffered + carry) & 0xFF)
            self.buffered = lead & 0xFF
            self.out.extend(bytes([(0xFF + carry) & 0xFF]) * (self.NB - 1))
            self.NB = 1
        else:
            self.NB, self.buffered = 1, lead

    def _shift(self, n):
        self.L = (self.L << n) & 0xFFFFFFFF
        self.BL -= n
        if self.BL < 12:
            self._write_out()

    def encode_bin(self, ctx, bin_val):
        """Regular bin (CABAC §3.7) followed by the context update (CABAC §4.4)."""
        c = self.ctx[ctx]
        S = c.S
        r_lps = RLPS_TABLE[(self.R >> 5) & 7][abs(S >> 7)]
        self.R -= r_lps
        bin_val = 1 if bin_val else 0
        if bin_val == (1 if S >= 0 else 0):     # MPS: at most one shift
            if self.R < 256:
                self.R <<= 1
                self._shift(1)
        else:
            n = 0
            while (r_lps << n) < 256:
                n += 1
            self.L = (self.L + self.R) & 0xFFFFFFFF
            self.R = r_lps << n
            self._shift(n)
        c.update(bin_val)

    def encode_bypass(self, value, n):
        """n bypass bins carrying the unsigned value, most significant first (CABAC §3.7)."""
        if not 1 <= n <= 32 or not 0 <= value < 1 << n:
            raise EncoderConfigError(f"bypass value {value} does not fit {n} bins (n 1..32)")
        for x in range(n - 1, -1, -1):
            self.L = (self.L << 1) & 0xFFFFFFFF
            if (value >> x) & 1:
                self.L = (self.L + self.R) & 0xFFFFFFFF
            self.BL -= 1
            if self.BL < 12:
                self._write_out()

    def encode_terminate(self, bin_val):
        """Terminating bin (CABAC §3.7)."""
        self.R -= 2
        if bin_val:
            self.L = (self.L + self.R) & 0xFFFFFFFF
            self.R = 256
            self._shift(7)
        elif self.R < 256:
            self.R <<= 1
            self._shift(1)

    def reset_range(self):
        """Range reset at a block-row start (CABAC §3.6)."""
        self.R = 256

    def _flush(self):
        """CABAC §3.7 flush: resolve pending bytes, then the low register, stop bit and zeros."""
        if self.L >> (32 - self.BL):            # pending carry
            self.out.append((self.buffered + 1) & 0xFF)
            self.out.extend(b"\x00" * (self.NB - 1))
            self.L -= 1 << (32 - self.BL)
        else:
            if self.NB > 0:
                self.out.append(self.buffered)
            self.out.extend(b"\xff" * (self.NB - 1))
        low = ((self.L >> 8) << 1) + 1          # the register's bits, then the stop bit
        nbits = 24 - (self.BL - 1)
        low = (low << (32 - nbits)) & 0xFFFFFFFF
        for x in range(0, nbits, 8):
            self.out.append((low >> (24 - x)) & 0xFF)

    def _settle(self):
        """End a tensor in one form: carry absorbed, pending the last byte below 0xFF and after."""
        # only the representation changes, not the codeword: the Cython encoder writes the level
        # bytes in another rhythm and hands its engine back in this form
        if self.NB == 0:
            return
        if self.L >> (32 - self.BL):            # as a write-out would absorb it
            self.out.append((self.buffered + 1) & 0xFF)
            self.out.extend(b"\x00" * (self.NB - 1))
            self.L -= 1 << (32 - self.BL)
        else:
            self.out.append(self.buffered)
            self.out.extend(b"\xff" * (self.NB - 1))
        nff = 0
        while nff < len(self.out) - 1 and self.out[-1 - nff] == 0xFF:
            nff += 1
        self.buffered = self.out[-1 - nff]
        self.NB = nff + 1
        del self.out[len(self.out) - nff - 1:]

    def finish(self):
        """Terminating bin 1 and flush (CABAC §3.7); returns the payload."""
        if self.finished:
            raise EncoderConfigError("the encoder has already been finished")
        self.encode_terminate(1)
        self._flush()
        self.finished = True
        return bytes(self.out)

    # --- context memory (CABAC §4, CABAC §6.3) -------------------------------------------------

    def init_contexts(self, count):
        """Allocate `count` contexts, all with parameter set 0 (CABAC §6.3)."""
        self.ctx = [Context(0) for _ in range(count)]

    def set_context_param_set(self, ctx, k):
        """(Re)initialise context ctx with parameter set k (CABAC §4.2)."""
        if not 0 <= k <= 8:
            raise EncoderConfigError(f"parameter set {k} outside 0..8")
        self.ctx[ctx].init(k)

    def reset_contexts(self):
        """Block-row reset of every context to its own parameter set (CABAC §6.3)."""
        for c in self.ctx:
            c.reset()

    # --- levels (CABAC §5, CABAC §6.2) ---------------------------------------------------------

    def encode_level(self, k, dq_state, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
        """One level k (CABAC §5.1/5.2) with the contexts of CABAC §6.2: a bin is written iff the
        decoder reads it (pytwin_levels.decode_level).  The engine is left in the form every tensor
        ends in (_settle), as the Cython encoder, which codes the level on its level-loop engine."""
        pytwin_levels.check_codebook(codebook_size, cb_zero_offset)
        if not INT32_MIN <= k <= INT32_MAX:
            raise EncoderConfigError(f"level {k} does not fit int32")
        if codebook_size > 0 and not -cb_zero_offset <= k <= codebook_size - 1 - cb_zero_offset:
            raise EncoderConfigError(f"level {k} outside the codebook")
        self._binarize_level(k, dq_state, neighbour, b, h, N, codebook_size, cb_zero_offset)
        self._settle()

    def _binarize_level(self, k, dq_state, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
        """encode_level's bins, without its range checks (tests write invalid streams with it)."""
        bounded = codebook_size > 0
        if codebook_size == 1:
            return                              # CABAC §5.2: no bins at all
        s = dq_state
        c = neighbour_class(neighbour)
        self.encode_bin(ctx_sig(s, c, b, h), k != 0)        # sig_flag
        if k == 0:
            return
        # sign_flag, unless a codebook end infers it
        sign = 1 if k < 0 else 0
        if not (bounded and cb_zero_offset in (0, codebook_size - 1)):
            self.encode_bin(ctx_sign(c, b), sign)
        M = (cb_zero_offset if sign else codebook_size - 1 - cb_zero_offset) if bounded else None
        a = abs(k)
        v = 1
        flag = 0
        # abs_level_greater_x[j]
        if M is None or M > 1:
            j = 0
            while True:
                flag = 1 if a > v else 0
                self.encode_bin(ctx_gtx(N, j, sign, b), flag)
                v += flag
                if not (flag and j < N - 1 and (M is None or v < M)):
                    break
                j += 1
        # abs_remainder: prefix bin i is 1 while another group of 2^t still fits below |k|
        if flag and (M is None or v < M):
            t = i = 0
            while True:
                prefix_bin = 1 if a >= v + (1 << t) else 0
                self.encode_bin(ctx_rem(N) + i, prefix_bin)
                if prefix_bin:
                    v += 1 << t
                    t += 1
                if not (prefix_bin and i < 30 and (M is None or v + (1 << t) <= M)):
                    break
                i += 1
            if t:
                self.encode_bypass(a - v, t)

    # --- tensors (CABAC §12 procedure B, mirrored; CABAC §13) ------------------------------------

    def encode_tensor(self, t, variant=2):
        """Code one tensor: qp_offset, edition-2 flags, signalling, levels."""
        if self.finished:
            raise EncoderConfigError("the encoder has already been finished")
        p = prepare(t, variant)
        N = p.N
        if p.qp_bits:                                           # B.1
            self.encode_bypass(p.qp_offset & ((1 << p.qp_bits) - 1), p.qp_bits)
        self.init_contexts(num_contexts(N))                      # B.3
        if p.edition2_flags:                                    # B.4
            if p.parent:
                self.encode_bypass(p.hdsp_flag, 1)
            self.encode_bypass(p.rowskip_flag, 1)
            if p.rowskip_flag:
                for r in range(p.rows):
                    self.encode_bin(ctx_row_skip(N), int(p.skip[r]))
        # B.5 context parameter sets: NNCodec's choice (CABAC §6.5) or all 0
        shadow = None
        if p.param_opt:
            shadow = [Shadow() for _ in range(num_contexts(N))]
            _code_levels(self, p, variant, shadow)
        for ctx, coded in signalled_contexts(N, p.dq, p.tca is not None, p.hdsp_flag,
                                             p.cbsize, p.cbzero, variant):
            k = 0
            if coded:
                k = shadow[ctx].best() if shadow is not None else 0
                self.encode_bin(ctx_param_set_flag(N), k != 0)
                if k:
                    self.encode_bypass(k - 1, 3)
            self.set_context_param_set(ctx, k)
        # B.6 range reset; REF-QUIRK: NNCodec-1 also for a single block row (CABAC §11)
        if p.eff_scan and (p.n_brows > 1 or variant == VARIANT_NNCODEC1):
            self.reset_range()
        _code_levels(self, p, variant, None)                    # B.7
        self._settle()

    # --- inspection ----------------------------------------------------------------------------

    def state(self):
        """Engine registers for lockstep comparison."""
        return {"L": self.L, "R": self.R, "BL": self.BL, "NB": self.NB,
                "buffered": self.buffered, "bytes_written": len(self.out)}

    def contexts(self):
        """Context memory as int32 array (count, 5): S0, S1, sh0, sh1, k."""
        out = np.zeros((len(self.ctx), 5), dtype=np.int32)
        for x, c in enumerate(self.ctx):
            out[x] = (c.S0, c.S1, c.sh0, c.sh1, c.k)
        return out


def _code_levels(enc, p, variant, shadow):
    """B.7: walk the scan (CABAC §7) with row skipping and block-row resets.  With `shadow` this is
    the pseudo pass of CABAC §6.5 (bit estimates only), otherwise the real coding of the levels."""
    N, W = p.N, p.W
    s = neighbour = 0
    block_row = 0
    for br, r, c_first, c_last in scan_segments(p.rows, W, p.eff_scan):
        if br != block_row:
            block_row = br
            if shadow is not None:
                for m in shadow:
                    m.reset()
                if variant == VARIANT_NNCODEC1:
                    neighbour = 0       # REF-QUIRK: only NNCodec-1 resets it here (CABAC §11.4)
            else:
                enc.reset_contexts()
                neighbour = 0
                enc.reset_range()
        if p.rowskip_flag and p.skip[r]:
            if p.dq:                    # REF-QUIRK: RowWidth parity-0 transitions (CABAC §7.3)
                for _ in range(W % 4):
                    s = NEXT[s][0]
            continue
        for col in range(c_first, c_last + 1):
            pos = r * W + col
            i = int(p.levels[pos])
            k = i
            if p.dq:
                k = index_to_level(i, s)
                if shadow is None and i != 0 and (i ^ s) & 1:
                    enc.rounded += 1
            b = int(p.tca[pos]) if p.tca is not None else 0
            h = 1 if p.hist is not None and p.hist[pos] else 0
            if shadow is not None:
                pseudo_level(shadow, i, s, neighbour, b, h, N)
                neighbour = i           # REF-QUIRK: the reconstruction index (CABAC §6.5.3)
            else:
                if not p.no_bins:
                    enc._binarize_level(k, s, neighbour, b, h, N, p.cbsize, p.cbzero)
                neighbour = k
            if p.dq:
                s = NEXT[s][k & 1]


def encode_payload(tensors, variant=2, stats=None):
    """Code the tensors of one NDU payload back to back (CABAC §13); returns the payload and, per
    tensor, the entry points (BitOffsetDelta, ep_arith_value, ep_dq_state) found by decoding it
    (CABAC §13.5). stats: a dict that receives "rounded", the number of DQ indices of the wrong
    parity that were rounded to a level (the decoder then returns other indices)."""
    tensors = list(tensors)
    enc = CabacEncoder()
    for t in tensors:
        enc.encode_tensor(t, variant)
    payload = enc.finish()
    if stats is not None:
        stats["rounded"] = enc.rounded
    if not any(_has_entry_points(t) for t in tensors):
        return payload, [[] for _ in tensors]
    results = pytwin.decode_payload(payload, [t.coding for t in tensors], variant)
    return payload, [list(r.entry_points) for r in results]


def _has_entry_points(t):
    c = t.coding
    if not (c.ndim >= 2 and c.rows > 1 and c.row_width > 1 and c.scan_order > 0):
        return False
    return num_block_rows(c.rows, c.scan_order) > 1
