"""Pure-Python twin of the DeepCABAC decoder: engine and probability model.

Implements CABAC §3.1–3.6 (binary arithmetic decoding engine) and CABAC §4 (context
model); the tensor procedure (CABAC §5–8, CABAC §12) lives in `pytwin_levels`. Written for clarity:
the differential tests run it in lockstep with the Cython decoder `_decoder.pyx`, comparing the
whole state after every call (API contract: README.md next to this file).
"""
import numpy as np

from nnr_core.errors import EntropyDecodingError, SyntaxValueError
from nnr_core.cabac import pytwin_levels
from nnr_core.cabac.params import TensorCoding, TensorResult  # noqa: F401  (re-exported)

# Appendix A.1: RLPS_TABLE[q][p], q = (R >> 5) & 7, p = abs(S >> 7).
RLPS_TABLE = (
    (128, 112, 97, 84, 74, 65, 57, 50, 45, 39, 34, 30, 27, 23, 20, 18,
     15, 14, 12, 11, 10, 9, 7, 7, 5, 5, 4, 4, 3, 3, 2, 2),
    (142, 125, 108, 93, 82, 72, 63, 56, 50, 43, 38, 33, 30, 26, 22, 20,
     17, 16, 13, 12, 11, 10, 8, 8, 6, 6, 5, 5, 3, 3, 2, 2),
    (156, 137, 119, 103, 90, 79, 70, 61, 55, 48, 42, 37, 33, 28, 24, 22,
     19, 17, 15, 13, 12, 11, 9, 9, 6, 6, 5, 5, 4, 4, 2, 2),
    (171, 150, 130, 112, 99, 87, 76, 67, 60, 52, 46, 40, 36, 31, 27, 24,
     21, 19, 16, 15, 13, 12, 10, 10, 7, 7, 6, 6, 4, 4, 3, 3),
    (185, 162, 141, 121, 107, 94, 82, 73, 65, 56, 50, 43, 39, 34, 29, 26,
     22, 21, 17, 16, 14, 13, 11, 11, 8, 8, 6, 6, 4, 4, 3, 3),
    (199, 175, 152, 131, 115, 101, 89, 78, 70, 61, 54, 47, 42, 36, 31, 28,
     24, 22, 19, 17, 15, 14, 12, 12, 8, 8, 7, 7, 5, 5, 3, 3),
    (213, 187, 163, 140, 123, 108, 95, 84, 75, 65, 58, 50, 45, 39, 33, 30,
     26, 24, 20, 18, 16, 15, 13, 13, 9, 9, 7, 7, 5, 5, 3, 3),
    (228, 200, 174, 150, 132, 116, 102, 90, 80, 70, 62, 54, 48, 42, 36, 32,
     28, 26, 22, 20, 18, 16, 14, 14, 10, 10, 8, 8, 6, 6, 4, 4),
)

# Appendix A.2: adaptation step of the two estimators, indexed 16 + (g·S >> shift).
CURVE = (2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208,
         144, 80, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0)

# CABAC §4.2: parameter set k -> (sh0, sh1, initial S0, initial S1).
PARAM_SETS = (
    (5, 4, 0, 0),
    (5, 4, -41, -654),
    (5, 4, 95, 1519),
    (4, 5, 0, 0),
    (6, 6, 30, 482),
    (6, 6, 95, 1519),
    (6, 6, -21, -337),
    (7, 5, 0, 0),
    (7, 5, 30, 482),
)


class Context:
    """One probability model (CABAC §4.1): estimators S0, S1, shifts sh0, sh1, parameter set k."""

    __slots__ = ("S0", "S1", "sh0", "sh1", "k")

    def __init__(self, k=0):
        self.init(k)

    def init(self, k):
        """(Re)initialise state and shifts with parameter set k (CABAC §4.2)."""
        self.sh0, self.sh1, self.S0, self.S1 = PARAM_SETS[k]
        self.k = k

    def reset(self):
        """Block-row reset (CABAC §6.3): S0, S1 to the initial values of the context's own set."""
        _, _, self.S0, self.S1 = PARAM_SETS[self.k]

    @property
    def S(self):
        """Combined estimate S = S1 + 16·S0 (CABAC §4.1)."""
        return self.S1 + 16 * self.S0

    def update(self, bin_val):
        """Adapt both estimators to the coded bin (CABAC §4.4)."""
        g = 1 if bin_val else -1
        self.S0 += g * (CURVE[16 + ((g * self.S0) >> 3)] >> self.sh0)
        self.S1 += g * (CURVE[16 + ((g * self.S1) >> 7)] >> self.sh1)


class CabacDecoder:
    """DeepCABAC decoder: engine (CABAC §3) plus one tensor's context memory (CABAC §6.3)."""

    def __init__(self, payload):
        """Initialise on the first two payload bytes (CABAC §3.1)."""
        self.payload = bytes(payload)
        self.bytes_read = 0
        self.overread = 0           # bytes fed as zero past the payload end
        self.ctx = []
        self.R = 510
        self.V = (self._read_byte() << 8) | self._read_byte()
        self.B = -8
        # CABAC §3.1: V < R·128; an initial offset of 510/511 is no codeword (HEVC forbids it too).
        # Reported when decoding starts (decode_tensor, finish), never by the constructor.
        self.bad_start = self.V >= self.R << 7

    # --- engine (CABAC §3) -----------------------------------------------------------------

    def _read_byte(self):
        """Next payload byte; past the end a zero byte, counted as over-read (CABAC §3.5)."""
        pos = self.bytes_read
        self.bytes_read += 1
        if pos < len(self.payload):
            return self.payload[pos]
        self.overread += 1
        return 0

    def check_start(self):
        """Raise if the codeword starts with an offset outside the initial range (CABAC §3.1)."""
        if self.bad_start:
            raise self.error("arithmetic offset outside the initial range", "arithmetic codeword")

    def _renorm(self, n):
        """CABAC §3.1 refill rule after shifting R and V left by n bits."""
        self.R <<= n
        self.V <<= n
        self.B += n
        if self.B >= 0:
            self.V += self._read_byte() << self.B
            self.B -= 8

    @property
    def P(self):
        """Bit position: single-bit left shifts of V since initialisation (CABAC §3.8)."""
        return 8 * self.bytes_read - 16 + (self.B + 8)

    def error(self, message, element):
        """An EntropyDecodingError located at the bits consumed into the value register."""
        return EntropyDecodingError(message, element=element, bit_offset=self.P + 9)

    def decode_bin(self, ctx):
        """Regular bin (CABAC §3.2, CABAC §3.3) followed by the context update (CABAC §4.4)."""
        c = self.ctx[ctx]
        S = c.S
        r_lps = RLPS_TABLE[(self.R >> 5) & 7][abs(S >> 7)]
        mps = 1 if S >= 0 else 0
        r_mps = self.R - r_lps
        if self.V < r_mps << 7:
            bin_val = mps
            self.R = r_mps
        else:
            bin_val = 1 - mps
            self.V -= r_mps << 7
            self.R = r_lps
        n = 0
        while (self.R << n) < 256:
            n += 1
        self._renorm(n)
        c.update(bin_val)
        return bin_val

    def _decode_bypass_bin(self):
        """One equiprobable bin (CABAC §3.4)."""
        self.V <<= 1
        self.B += 1
        if self.B >= 0:
            self.V += self._read_byte()
            self.B = -8
        if self.V >= self.R << 7:
            self.V -= self.R << 7
            return 1
        return 0

    def decode_bypass(self, n):
        """n bypass bins as an unsigned value, first bin most significant (CABAC §3.4)."""
        if not 1 <= n <= 32:
            raise SyntaxValueError("bypass bin count out of range", value=n, allowed="1..32")
        value = 0
        for _ in range(n):
            value = (value << 1) | self._decode_bypass_bin()
        return value

    def decode_terminate(self):
        """Terminating bin (CABAC §3.5)."""
        self.R -= 2
        if self.V >= self.R << 7:
            return 1
        if self.R < 256:
            self._renorm(1)
        return 0

    def reset_range(self):
        """Range reset at a block-row start (CABAC §3.6); V and B are untouched."""
        self.R = 256
        # V < R·128 holds between bins (CABAC §3.1) and ep_arith_value = V >> 7 has 8 bits
        # (CABAC §3.8): a corrupt codeword can break it only here, after which V would grow without
        # bound.
        if self.V >= self.R << 7:
            raise self.error("arithmetic offset outside the reset range", "arithmetic codeword")

    def finish(self):
        """Terminating bin and the end-of-payload checks (CABAC §3.5)."""
        terminating_bin = self.decode_terminate()
        self.check_start()
        if self.overread:                       # the root cause of whatever follows
            raise self.error(f"codeword runs {self.overread} bytes past the payload end",
                             "payload length")
        if terminating_bin != 1:
            raise self.error("terminating bin is 0", "terminating bin")
        if self.bytes_read != len(self.payload):
            raise self.error(f"payload has {len(self.payload)} bytes, the codeword "
                             f"{self.bytes_read}", "payload length")
        free_bits = -self.B                     # bits 8 + B … 7 of the last byte are unconsumed
        tail = self.payload[-1] & ((1 << free_bits) - 1)
        if tail != 1 << (free_bits - 1):
            raise self.error("no stop bit 1 followed by zero bits", "stop bit")

    # --- context memory (CABAC §4, CABAC §6.3) -----------------------------------------------

    def init_contexts(self, count):
        """Allocate `count` contexts, all with parameter set 0 (CABAC §6.3)."""
        self.ctx = [Context(0) for _ in range(count)]

    def set_context_param_set(self, ctx, k):
        """(Re)initialise context ctx with parameter set k (CABAC §4.2, CABAC §6.4)."""
        if not 0 <= k <= 8:
            raise SyntaxValueError("parameter set out of range", value=k, allowed="0..8")
        self.ctx[ctx].init(k)

    def reset_contexts(self):
        """Block-row reset of every context to its own parameter set (CABAC §6.3)."""
        for c in self.ctx:
            c.reset()

    # --- levels and tensors (CABAC §5–8, CABAC §12) -----------------------------------------

    def decode_level(self, dq_state, neighbour, b, h, N, codebook_size=0, cb_zero_offset=0):
        """One level k (CABAC §5.1/5.2) with the context selection of CABAC §6.2."""
        return pytwin_levels.decode_level(self, dq_state, neighbour, b, h, N,
                                          codebook_size, cb_zero_offset)

    def decode_tensor(self, t, variant=2):
        """Procedure B of CABAC §12 for one tensor."""
        return pytwin_levels.decode_tensor(self, t, variant)

    # --- inspection ------------------------------------------------------------------------

    def state(self):
        """Engine registers for lockstep comparison."""
        return {"R": self.R, "V": self.V, "B": self.B, "bytes_read": self.bytes_read,
                "overread": self.overread, "P": self.P}

    def contexts(self):
        """Context memory as int32 array (count, 5): S0, S1, sh0, sh1, k."""
        out = np.zeros((len(self.ctx), 5), dtype=np.int32)
        for i, c in enumerate(self.ctx):
            out[i] = (c.S0, c.S1, c.sh0, c.sh1, c.k)
        return out


def decode_payload(payload, tensors, variant=2, jobs=1, entry_points=None):
    """Decode every tensor of one NDU payload and check its end (CABAC §12 procedure A, 1–3).
    jobs / entry_points (block-row parallel decoding in the Cython module) are accepted and
    ignored: the twin decodes sequentially, with the same results."""
    d = CabacDecoder(payload)
    results = [d.decode_tensor(t, variant) for t in tensors]
    d.finish()
    return results
