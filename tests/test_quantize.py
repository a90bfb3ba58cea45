"""Encoder quantizers level-exact with NNCodec 2.1.3 (CABAC §8.3, CABAC §9.3-9.5, CABAC §14.3)."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nnr.errors import EncoderConfigError, UnsupportedFeatureError
from nnr.testenv.nncodec import find_reference, peer_env
from nnr_core.quant import _quant
from nnr_core.quant.quantize import (_qstep32, best_codebook_egk, bitdepth_qp, clip_to_bitdepth,
                                     codebook_header_bits, codebook_quantize, overflow_guard_qp,
                                     quantize, quantize_tcq, quantize_uniform)
from nnr_core.syntax.units import parse_units

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, "bitstreams")
SETS = ("nncodec-2.1.3", "nncodec-1.x")


REFERENCE, WHY = find_reference()
NEXT = [[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]]


def _sha(levels):
    return hashlib.sha256(np.ascontiguousarray(levels, dtype="<i4").tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# CABAC §14.3 quantization vectors


def _vector_weights():
    n = np.arange(240)
    return ((((37 * n) % 101) - 50) / 256).astype(np.float32).reshape(12, 20)


def test_14_3_uniform():
    levels, qp = quantize_uniform(_vector_weights(), -30, 2)
    assert qp == -30
    assert levels[0].tolist() == [-33, -9, 16, -27, -2, 23, -20, 5, 29, -13, 11, -31, -7, 18, -25,
                                  0, 25, -18, 7, 31]
    assert _sha(levels) == "b42688a5cb00fa03dbeef70525d9cc8c6ddf36ab96f4bda37a46f7d0ca10ef93"


def test_14_3_tcq():
    indices, qp = quantize_tcq(_vector_weights(), -30, 2, 12, 20, 0)
    assert qp == -30
    assert indices[0].tolist() == [-34, -8, 15, -27, -2, 22, -20, 5, 29, -13, 12, -31, -6, 19, -25,
                                   0, 25, -18, 6, 32]
    assert _sha(indices) == "a494479c8bd87f50a4aa00fea0d1faef7e34f26ddb63c29ba32f41852a0c492e"


def test_branch_order_matches_next_table():
    # CABAC §8.3 step 3, the table the unrolled kernel hard-codes
    assert _quant.branch_table() == [
        [(0, 0), (0, 4), (4, 2)], [(2, 0), (2, 4), (6, 2)], [(0, 2), (4, 0), (4, 4)],
        [(2, 2), (6, 0), (6, 4)], [(3, 1), (7, 3), (7, 4)], [(1, 1), (5, 3), (5, 4)],
        [(3, 3), (3, 4), (7, 1)], [(1, 3), (1, 4), (5, 1)]]


def test_kernel_branch_order_matches_next_table():
    # the plain trellis kernels hard-code the branch order (include/nnr_tcq.h)
    assert _quant.kernel_branch_table() == _quant.branch_table()


# ---------------------------------------------------------------------------------------------
# CABAC §8.3 trellis kernels: scalar, AVX2, AVX-512 (whichever this CPU runs) give the same levels


def _tcq_python(w, qstep, scan, importance=None):
    """CABAC §8.3 without rate term, transcribed from the spec in Python doubles (small inputs only)."""
    qscale = 1.0 / float(qstep)
    branches = [[] for _ in range(8)]
    for p in range(8):
        branches[NEXT[p][0]] += [(p, 3 * (p & 1)), (p, 4)]
        branches[NEXT[p][1]].append((p, 2 - (p & 1)))
    J = [0.0] + [0.5 * np.finfo(np.float64).max] * 7
    back = []
    for pos in scan:
        v = float(w[pos])
        t = qscale * v
        org = -t if v < 0 else t
        q0 = max(1, int(org) - 1)
        f = 1.0 if importance is None else float(importance[pos])
        dist = {4: (org * org) * f}
        for q in range(q0, q0 + 4):
            dist[q & 3] = ((org - q) * (org - q)) * f
        new, dec = [], []
        for c in range(8):
            best = None
            for p, cls in branches[c]:
                cost = J[p] + dist[cls]
                if best is None or cost < best[0]:
                    best = (cost, p, cls, q0)
            new.append(best[0])
            dec.append(best[1:])
        J = new
        back.append(dec)
    out = np.zeros(len(w), dtype=np.int32)
    s = min(range(8), key=lambda c: (J[c], c))
    for k in range(len(scan) - 1, -1, -1):
        p, cls, q0 = back[k][s]
        if cls != 4:
            q = q0 + ((cls - q0) & 3)
            i = 2 * ((q + 1) >> 1) - (p & 1)
            out[scan[k]] = -i if w[scan[k]] < 0 else i
        s = p
    return out


def _tcq_with(kernel, w, qp, importance=None, scan_order=0):
    prev = _quant.set_tcq_kernel(kernel)
    try:
        return quantize_tcq(w, qp, 2, scan_order=scan_order, importance=importance)
    finally:
        _quant.set_tcq_kernel(prev)


def test_tcq_kernels_listed():
    kernels = _quant.tcq_kernels()
    assert kernels[0] == "scalar" and set(kernels) <= {"scalar", "avx2", "avx512"}
    assert _quant.tcq_kernel() == kernels[-1] or os.environ.get("NNR_TCQ_KERNEL")
    with pytest.raises(ValueError):
        _quant.set_tcq_kernel("sse9")


@pytest.mark.parametrize("kernel", ["scalar", "avx2", "avx512"])
def test_tcq_kernel_matches_python_transcription(kernel):
    if kernel not in _quant.tcq_kernels():
        pytest.skip(f"this CPU does not run the {kernel} kernel")
    rng = np.random.default_rng(3)
    for n in list(range(1, 18)) + [200]:
        for w, qp in (((rng.standard_normal(n) * 0.05), -32), ((rng.laplace(size=n) * 3), -20),
                      (np.zeros(n), -32), (rng.integers(-9, 10, n) * 0.5 * 2.0 ** -8, -32)):
            w = w.astype(np.float32)
            imp = rng.gamma(0.5, 2.0, n) if n % 3 == 0 else None
            want = _tcq_python(w, _qstep32(qp, 2), np.arange(n), imp)
            np.testing.assert_array_equal(_tcq_with(kernel, w, qp, imp)[0], want)
    w = (rng.standard_normal((9, 14)) * 0.1).astype(np.float32)
    for scan_order in range(1, 5):
        want = _tcq_python(w.reshape(-1), _qstep32(-30, 2), _quant.scan_positions(9, 14, scan_order))
        got = _tcq_with(kernel, w, -30, scan_order=scan_order)[0]
        np.testing.assert_array_equal(got.reshape(-1), want)


def test_tcq_kernels_agree():
    # the SIMD kernels against the scalar fallback, on every scan, with and without weights
    rng = np.random.default_rng(17)
    cases = []
    for shape, scale in (((300, 257), 0.05), ((64, 3, 3, 3), 1.0), ((1000,), 0.01), ((7, 1), 2.0)):
        w = rng.standard_normal(shape) * scale
        laplace = np.sign(w) * rng.laplace(size=shape) * scale
        cases += [(w, None), (laplace, rng.gamma(0.4, size=shape)),
                  (w * (rng.random(shape) < 0.3), np.ones(shape))]
    for w, imp in cases:
        w = w.astype(np.float32)
        for scan_order in range(5):
            want = _tcq_with("scalar", w, -34, imp, scan_order)
            for kernel in _quant.tcq_kernels()[1:]:
                got = _tcq_with(kernel, w, -34, imp, scan_order)
                np.testing.assert_array_equal(got[0], want[0], err_msg=f"{kernel} {scan_order}")
                assert got[1] == want[1]


def test_tcq_identity_scan_is_the_matrix_scan():
    w = (np.random.default_rng(5).standard_normal(999) * 0.05).astype(np.float32)
    q32, dec = _qstep32(-32, 2), np.empty(2 * 999, dtype=np.uint8)
    a, b = np.empty(999, dtype=np.int32), np.empty(999, dtype=np.int32)
    assert _quant.tcq_plain(w, None, a, q32, dec)
    assert _quant.tcq_plain(w, np.arange(999, dtype=np.int64), b, q32, dec)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        _quant.tcq_plain(w, None, a, q32, dec[1:])
    with pytest.raises(ValueError):
        _quant.tcq_plain(w, np.arange(998, dtype=np.int64), a, q32, dec)


def test_tcq_guard_boundary():
    # the kernel's float32 test |x| >= 2^31 is NNCodec's round(x) > 2^31 - 3 or < -(2^31 - 2)
    x = np.float32(2.0 ** 31)
    near = [np.nextafter(x, np.float32(0)), x, np.nextafter(x, np.float32(np.inf))]
    q32 = _qstep32(0, 2)     # Delta 1
    for v in near + [-v for v in near]:
        d = float(v)
        want = not (d >= 2147483645.5 or d <= -2147483646.5)
        w = np.array([0.5, v], dtype=np.float32)
        assert _quant.tcq_plain(w, None, np.empty(2, np.int32), q32, np.empty(4, np.uint8)) == want


def test_tcq_kernel_environment_variable():
    code = "from nnr_core.quant import _quant; print(_quant.tcq_kernel())"
    env = dict(os.environ, NNR_TCQ_KERNEL="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "scalar"


def test_block_scan_order():
    # CABAC §7.2 example: 10 x 10, BD 8
    pos = _quant.scan_positions(10, 10, 1)
    assert pos[:9].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10]
    assert pos[64:68].tolist() == [8, 9, 18, 19]
    assert pos[80:83].tolist() == [80, 81, 82]
    assert pos[96:].tolist() == [88, 89, 98, 99]
    assert sorted(pos.tolist()) == list(range(100))


# ---------------------------------------------------------------------------------------------
# NNCodec vectors: every tensor quantized by one known configuration


def _cases():
    out = []
    for set_name in SETS:
        base = os.path.join(ROOT, set_name)
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            # integer (skip) and incremental cases belong to the encoder orchestration tests
            if not os.path.isdir(path) or name.startswith(("int_", "inc_")):
                continue
            out.append(pytest.param(path, id=f"{set_name}/{name}"))
    return out


def _load(path):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    meta = {k: v for k, v in cfg["levels_meta"].items() if not k.startswith("_")}
    with np.load(os.path.join(path, "levels.npz")) as z:
        levels = {k: z[k] for k in z.files}
    if os.path.exists(os.path.join(path, "sparsified_input.npy")):
        # what NNCodec actually quantized after its encoder-side sparsification
        inputs = {k: np.load(os.path.join(path, "sparsified_input.npy")) for k in meta}
    elif os.path.exists(os.path.join(path, "input.npz")):
        with np.load(os.path.join(path, "input.npz")) as z:
            inputs = {k: z[k] for k in z.files}
    else:
        inputs = {k: np.load(os.path.join(path, "input.npy")) for k in meta}
    args = cfg.get("encoder_args") or cfg.get("args")
    return cfg, args, cfg["levels_meta"]["_qp_density"], meta, inputs, levels


def _entropy_roundtrip(indices):
    """What a decoder returns for DQ indices from CABAC §8.2's encoder mapping (parity not enforced)."""
    s, out = 0, np.empty(indices.size, dtype=np.int32)
    for n, i in enumerate(indices.reshape(-1).tolist()):
        k = (i + (s & 1)) >> 1 if i > 0 else (i - (s & 1)) >> 1 if i < 0 else 0
        out[n] = 0 if k == 0 else 2 * k - (1 if k > 0 else -1) * (s & 1)
        s = NEXT[s][k & 1]
    return out.reshape(indices.shape)


def _crude_payload_bytes(values, dq_flag=0):
    """Stand-in for the entropy encoder: about 2 log2 bits per level."""
    a = np.abs(np.asarray(values, dtype=np.int64))
    return int(np.sum(2 * np.ceil(np.log2(1 + a)) + 1) // 8)


@pytest.mark.parametrize("path", _cases())
def test_reference_levels(path):
    cfg, args, qp_density, meta, inputs, levels = _load(path)
    header = None
    checked = 0
    for name, m in meta.items():
        w = inputs[name]
        want = levels[name].reshape(w.shape)
        bitdepth = args.get("bitdepth")
        if m["approx_method"] == "skip":
            continue
        if m["approx_method"] == "codebook" or args.get("approx_method") == "codebook" \
                or args.get("codebook_mode"):
            if header is None:
                header = [u for u in parse_units(open(os.path.join(path, "bitstream.nnc"), "rb").read())
                          if u.fields.get("codebook_present_flag")]
            cb = header[0].fields["codebook"] if header else None

            def trial(symbols, size, offset):
                # stand-in: the offset the reference chose is the cheapest
                return 0 if cb is not None and offset == cb["CbZeroOffset"] else 1

            got = codebook_quantize(w, args["qp"], qp_density, args["use_dq"], trial,
                                    mode2_encode=_crude_payload_bytes,
                                    scan_order=m.get("scan_order", 0))
            assert got["approx_method"] == m["approx_method"]
            assert got["qp"] == m["qp"]
            if m["approx_method"] == "codebook":
                assert got["codebook"] == [int(v) for v in cb["Codebook"]]
                assert got["cb_zero_offset"] == cb["CbZeroOffset"]
                assert got["codebook_egk"] == cb["codebook_egk"]
                np.testing.assert_array_equal(got["symbols"], want)
            else:
                np.testing.assert_array_equal(got["levels"], want)
            checked += 1
            continue
        got, qp = quantize(w, m["qp"], qp_density, m["dq_flag"], m.get("scan_order", 0))
        assert qp == m["qp"]
        if bitdepth:
            assert bitdepth_qp(w, bitdepth, qp_density)[0] == m["qp"]
            got = clip_to_bitdepth(got, w, bitdepth)
            if m["dq_flag"]:
                # REF-QUIRK: clipping can break the DQ parity; the coder maps such an index to a
                # neighbouring level and the state path changes (CABAC §8.2), so compare decoded indices
                pos = _quant.scan_positions(*_rows_width(w.shape), m.get("scan_order", 0))
                flat = np.empty(w.size, dtype=np.int32)
                flat[pos] = _entropy_roundtrip(got.reshape(-1)[pos])
                got = flat.reshape(w.shape)
        np.testing.assert_array_equal(got, want, err_msg=name)
        checked += 1
    assert checked


def _rows_width(shape):
    return (shape[0], int(np.prod(shape[1:]))) if len(shape) > 1 else (shape[0], 1)


# ---------------------------------------------------------------------------------------------
# unit tests


@pytest.mark.parametrize("dq", [0, 1])
@pytest.mark.parametrize("w,qp,want_qp,want", [
    # values from NNCodec 2.1.3's quantLayer
    ([0.7, -0.3], -200, -126, {0: [2004318080, -858993536], 1: [2004318038, -858993494]}),
    ([0.7, -1.9], -200, -120, {0: [751619264, -2040109440], 1: [751619264, -2040109440]}),
    ([3e9, 1.0], -8, 2, {0: [2000000000, 1], 1: [2000000000, 0]}),
    ([-0.9, 0.2], -150, -124, {0: [-1932735232, 429496736], 1: [-1932735232, 429496736]}),
])
def test_overflow_guard_raises_qp(dq, w, qp, want_qp, want):
    w = np.array([w], dtype=np.float32)
    got, new_qp = quantize(w, qp, 2, dq)
    assert new_qp == want_qp
    assert got.reshape(-1).tolist() == want[dq]
    assert overflow_guard_qp(w.reshape(-1), 2) == want_qp


def test_no_guard_when_in_range():
    w = np.array([1.0, -1.0], dtype=np.float32)
    assert quantize_uniform(w, -40, 2)[1] == -40
    assert quantize_tcq(w, -40, 2)[1] == -40


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_rejected(bad):
    w = np.array([[0.1, bad], [0.2, 0.3]], dtype=np.float32)
    with pytest.raises(EncoderConfigError):
        quantize_uniform(w, -32, 2)
    with pytest.raises(EncoderConfigError):
        quantize_tcq(w, -32, 2)
    with pytest.raises(EncoderConfigError):
        bitdepth_qp(w, 8, 2)
    with pytest.raises(EncoderConfigError):
        codebook_quantize(w, -32, 2, False, lambda s, n, o: 0)


def test_bad_arguments():
    w = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(EncoderConfigError):
        quantize_uniform(w, -32, 8)
    with pytest.raises(EncoderConfigError):
        quantize_tcq(w, -32, 2, scan_order=5)
    with pytest.raises(EncoderConfigError):
        quantize_tcq(w, -32, 2, rows=3, row_width=2)
    with pytest.raises(EncoderConfigError):
        quantize_uniform(w, -32, 2, lambda_scale=float("nan"))


def test_deterministic():
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((37, 53)) * 0.05).astype(np.float32)
    for scan_order in range(5):
        a = quantize_tcq(w, -34, 2, scan_order=scan_order)[0]
        b = quantize_tcq(w.copy(), -34, 2, scan_order=scan_order)[0]
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(quantize_uniform(w, -34, 2)[0], quantize_uniform(w, -34, 2)[0])


def test_empty_and_float64_input():
    assert quantize_tcq(np.zeros((0, 4), dtype=np.float32), -32, 2)[0].shape == (0, 4)
    w64 = np.array([[0.123456789, -0.5]], dtype=np.float64)
    np.testing.assert_array_equal(quantize_uniform(w64, -32, 2)[0],
                                  quantize_uniform(w64.astype(np.float32), -32, 2)[0])


def test_bitdepth_rules():
    w = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)
    assert bitdepth_qp(np.zeros((4, 4), np.float32), 4, 2)[0] == 0       # all zero -> QP 0
    assert bitdepth_qp(w, 8, 2)[1] == (0, 255)
    assert bitdepth_qp(-w, 8, 2)[1] == (-128, 127)
    assert bitdepth_qp(-w, 2, 2, is_weight=False)[1] == (-128, 127)       # non-weights: >= 8 bits
    # the unsigned range doubles the levels: about one QP octave (2^qp_density) lower
    assert bitdepth_qp(w, 8, 2)[0] < bitdepth_qp(-w, 8, 2)[0]
    # steps up to 2^32 (QP 127 at qp_density 2) are signalled; beyond, the reference clamps the QP
    # and its levels saturate (1e12 decodes as 4.7e11): nnr refuses (spec/README.md)
    assert 120 < bitdepth_qp(w * 15 * 2.0**31.5, 4, 2)[0] <= (1 << 7) - 1
    for scale in (15 * 2.0**33, 1e30):
        with pytest.raises(EncoderConfigError, match="step size beyond the largest"):
            bitdepth_qp(w * scale, 4, 2)
    assert bitdepth_qp(w * 1e-30, 4, 2)[0] == -(1 << 7)                 # clipped to the smallest QP
    assert clip_to_bitdepth(np.array([-3, 300]), w, 8).tolist() == [0, 255]
    assert clip_to_bitdepth(np.array([-300, 300]), -w, 8).tolist() == [-128, 127]
    # non-weights get at least 8 bits
    assert clip_to_bitdepth(np.array([-300, 300]), -w, 2, is_weight=False).tolist() == [-128, 127]


def test_codebook_first_minimum_and_egk():
    w = np.array([[0.0, 0.5, 0.5, -1.0, 2.0, 0.0]], dtype=np.float32)
    sizes = []
    got = codebook_quantize(w, -8, 2, False, lambda s, n, o: sizes.append(o) or 5)
    assert sizes == list(range(len(got["codebook"])))
    assert got["cb_zero_offset"] == 0                                     # ties: first offset
    assert got["codebook"] == sorted(set(got["codebook"]))
    egk = got["codebook_egk"]
    bits = [codebook_header_bits(got["codebook"], 0, k) for k in range(16)]
    assert bits[egk] == min(bits) and bits.index(min(bits)) == egk
    assert best_codebook_egk([-1000, 0, 1000], 1) > 0


def _ue_length(k, x):
    """Length of ue(k) for x (HLS §1: exp-Golomb of order k), counted by hand."""
    n = 0
    while x >= (1 << k):
        n += 1
        x -= 1 << k
        k += 1
    return n + 1 + k


def _ie_length(k, x):
    return _ue_length(k, (-x) << 1 if x <= 0 else (x << 1) - 1)


def test_codebook_header_bits_are_the_written_codebook():
    """codebook_header_bits writes codebook() with the syntax tables; an independent count of its
    elements (egk u(4), size ue(2), centre offset ie(2), zero value ie(7), deltas ue(egk)) agrees."""
    rng = np.random.default_rng(8)
    for _ in range(300):
        size = int(rng.integers(1, 40))
        span = int(rng.choice([50, 5000, 2**31]))
        codebook = sorted({int(v) for v in rng.integers(-span, span, size)})
        size = len(codebook)
        zero = int(rng.integers(size))
        egk = int(rng.integers(16))
        want = 4 + _ue_length(2, size) + _ie_length(2, zero - (size >> 1)) + _ie_length(7, codebook[zero])
        want += sum(_ue_length(egk, codebook[j + 1] - codebook[j] - 1) for j in range(size - 1))
        assert codebook_header_bits(codebook, zero, egk) == want


def test_codebook_dq_requested_halves_step():
    w = (np.random.default_rng(3).standard_normal((8, 8)) * 0.05).astype(np.float32)
    got = codebook_quantize(w, -32, 2, True, lambda s, n, o: 0)
    assert got["qp"] == -36 and got["dq_flag"] == 0


# ---------------------------------------------------------------------------------------------
# interop with the installed reference


_REF_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from nncodec.extensions import deepCABAC
    from nncodec.nnc_core.approximator import ApproxInfo
    rng = np.random.RandomState(int(sys.argv[1]))
    out = []
    for t in range(60):
        ndim = rng.choice([1, 2, 2, 3, 4])
        shape = tuple(int(x) for x in rng.randint(1, 40, size=ndim))
        if t % 7 == 0:
            shape = (int(rng.randint(1, 150)), int(rng.randint(1, 150)))
        w = (rng.standard_t(3, size=shape) * rng.choice([0.01, 0.1, 1, 1e6, 1e9])).astype(np.float32)
        if t % 5 == 0:
            w[rng.rand(*shape) < 0.5] = 0
        qp = int(rng.randint(-80, 10)); qpd = int(rng.randint(0, 8))
        dq = int(rng.randint(0, 2)); so = int(rng.randint(0, 5)); bw = int(rng.randint(2, 17))
        q = np.zeros(shape, np.int32)
        e = deepCABAC.Encoder(); e.initCtxModels(10, 0)
        rq = e.quantLayer(w, q, dq, qpd, qp, 0.0, 10, so, 1)
        bdqp = None if not np.any(w) else int(ApproxInfo._get_intaligned_qp(None, w, qpd, bw, True))
        out.append(dict(w=w, qp=qp, qpd=qpd, dq=dq, so=so, rq=rq, q=q, bw=bw, bdqp=bdqp))
    np.save(sys.argv[2], np.array(out, dtype=object), allow_pickle=True)
""")


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
@pytest.mark.parametrize("seed", [1, 2])
def test_against_reference_random(tmp_path, seed):
    out = tmp_path / "ref.npy"
    script = tmp_path / "ref.py"
    script.write_text(_REF_SCRIPT)
    run = subprocess.run([REFERENCE[0], str(script), str(seed), str(out)], capture_output=True,
                         text=True, timeout=300, env=peer_env())
    assert run.returncode == 0, f"reference failed to run: {run.stderr[-300:]}"
    refused = 0
    for n, c in enumerate(np.load(out, allow_pickle=True)):
        q, qp = quantize(c["w"], c["qp"], c["qpd"], c["dq"], c["so"])
        assert qp == c["rq"], f"case {n}"
        np.testing.assert_array_equal(q, c["q"], err_msg=f"case {n}")
        if c["bdqp"] is not None:
            try:
                got = bitdepth_qp(c["w"], c["bw"], c["qpd"])[0]
            except EncoderConfigError:
                # nnr refuses where the reference clamps the QP at its largest (spec/README.md)
                assert c["bdqp"] == (1 << (5 + c["qpd"])) - 1, f"case {n}: refused but not clamped"
                refused += 1
            else:
                assert got == c["bdqp"], f"case {n}"
    assert refused <= 60 // 4, f"{refused} of 60 refused: too few QPs compared"
