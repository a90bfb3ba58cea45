"""Parallel coding (issue 5): jobs=1 and jobs=2 give the same bytes, tensors and errors; block-row
parallel decoding from entry points equals the sequential decode; entry points derived while
encoding equal the decoded ones; streaming from memory-mapped safetensors."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError, NNRError
from nnr_core.cabac import _decoder, _encoder
from nnr_core.cabac.params import TensorCoding, TensorEncoding


def _model(seed=0):
    rng = np.random.default_rng(seed)
    m = {}
    for i in range(4):
        m[f"l{i}.weight"] = rng.normal(0, 0.05, (64 + 16 * i, 96)).astype(np.float32)
        m[f"l{i}.bias"] = rng.normal(0, 0.01, (64 + 16 * i,)).astype(np.float32)
    m["count"] = np.arange(10, dtype=np.int32)
    return m


def _big(shape=(700, 400), seed=1):
    w = np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)
    w[30:60] = 0                       # skipped rows inside block rows
    return w


@pytest.mark.parametrize("options", [{}, {"dq": False}, {"scan_order": 2}, {"codebook": True},
                                     {"bitdepth": 8}, {"row_skipping": False, "param_opt": False}])
def test_encode_jobs_identical(options):
    m = _model()
    one = nnr.encode(m, jobs=1, **options)
    assert nnr.encode(m, jobs=2, **options) == one
    assert nnr.encode(m, **options) == one                 # default: all cores


def test_incremental_jobs_identical():
    base, upd = _model(0), _model(1)
    streams = []
    for jobs in (1, 2):
        enc = nnr.Encoder(jobs=jobs, qp=-30)
        streams.append((enc.encode(base), enc.encode(upd, hdsp=True)))
    assert streams[0] == streams[1]
    for jobs in (1, 2):
        dec = nnr.Decoder(jobs=jobs)
        dec.decode(streams[0][0])
        out = dec.decode(streams[0][1])
        ref = nnr.Decoder(jobs=1)
        ref.decode(streams[0][0])
        want = ref.decode(streams[0][1])
        assert out.keys() == want.keys()
        for k in out:
            assert np.array_equal(out[k], want[k])


def test_decode_jobs_identical():
    data = nnr.encode(_model(), scan_order=1)
    one = nnr.decode(data, jobs=1)
    two = nnr.decode(data, jobs=2)
    assert list(one) == list(two)
    for k in one:
        assert one[k].dtype == two[k].dtype and np.array_equal(one[k], two[k])


@pytest.mark.parametrize("scan,dq,shape", [(1, True, (700, 400)), (2, False, (700, 400)),
                                           (3, True, (517, 300)), (4, True, (300, 257))])
def test_block_row_parallel_decode_equals_sequential(scan, dq, shape):
    data = nnr.encode({"w": _big(shape)}, scan_order=scan, dq=dq)
    before = _decoder.parallel_fallbacks()
    seq = nnr.decode(data, jobs=1)["w"]
    for jobs in (2, 3, 5):
        assert np.array_equal(nnr.decode(data, jobs=jobs)["w"], seq)
    assert _decoder.parallel_fallbacks() == before          # the entry points were used


def _corrupt(data, pos):
    bad = bytearray(data)
    bad[pos] ^= 0x5A
    return bytes(bad)


def _error(data, jobs):
    try:
        nnr.decode(data, jobs=jobs)
    except NNRError as err:
        return type(err), str(err)
    return None


def test_block_row_parallel_errors_identical():
    data = nnr.encode({"w": _big()}, scan_order=2)
    rng = np.random.default_rng(7)
    n = len(data)
    positions = list(range(n - 40, n)) + [int(p) for p in rng.integers(60, n, 60)]
    seen_error = False
    for pos in positions:
        bad = _corrupt(data, pos)
        e1 = _error(bad, 1)
        assert _error(bad, 2) == e1
        seen_error |= e1 is not None
    assert seen_error


def test_ndu_parallel_errors_identical():
    data = nnr.encode(_model(), scan_order=1)
    n = len(data)
    for pos in range(0, n, max(1, n // 150)):
        bad = _corrupt(data, pos)
        assert _error(bad, 2) == _error(bad, 1)
    assert _error(data[:-3], 2) == _error(data[:-3], 1)


def _suite_rejects():
    import json
    import os
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        entries = [e for e in json.load(f)["entries"] if e["expect"] == "reject"]
    out = []
    for e in entries:
        steps = []
        for s in e["steps"]:
            with open(os.path.join(root, s["file"]), "rb") as f:
                steps.append(f.read())
        out.append((e["id"], steps, e.get("decoder_options", {})))
    return out


@pytest.mark.parametrize("entry_id, steps, options", _suite_rejects(), ids=lambda v: v if isinstance(v, str) else "")
def test_suite_rejects_fail_alike_with_threads(entry_id, steps, options):
    """Every must-reject stream of the conformance suite: the same class and message with 2 jobs."""
    errors = []
    for jobs in (1, 2):
        dec = nnr.Decoder(jobs=jobs, **options)
        with pytest.raises(NNRError) as info:
            for data in steps:
                dec.decode(data)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("seed", range(12))
def test_entry_points_while_encoding_equal_decoded(seed):
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(20, 260)), int(rng.integers(2, 120))
    scan, dq = int(rng.integers(1, 5)), int(rng.integers(0, 2))
    coding = TensorCoding(rows=rows, row_width=width, ndim=2, has_qp_offset=True, qp_density=2, dq_flag=dq,
                          cabac_unary_length_minus1=int(rng.integers(0, 12)), scan_order=scan,
                          general_profile_idc=1)
    w = rng.laplace(0, float(rng.choice([0.3, 3.0, 40.0])), (rows, width)).astype(np.float32)
    w[rng.random(rows) < 0.2] = 0
    if dq:
        from nnr_core.quant.quantize import quantize_tcq
        levels, _ = quantize_tcq(w.reshape(-1), 0, 2, rows, width, scan)
    else:
        levels = np.round(w).astype(np.int32).reshape(-1)
    t = TensorEncoding(coding, levels.reshape(-1).astype(np.int32), qp_offset=-5, row_skip_enabled_flag=1,
                       param_opt=bool(seed % 2))
    stats = {}
    payload, eps = _encoder.encode_payload([t], 2, stats=stats)
    decoded = _decoder.decode_payload(payload, [coding], 2)[0]
    assert [tuple(map(int, e)) for e in eps[0]] == [tuple(map(int, e)) for e in decoded.entry_points]
    # wrong-parity indices occur with row skipping in block scans (the reference's RowWidth
    # transitions per skipped segment): exactly then the decoder returns other indices
    assert (stats["rounded"] == 0) == np.array_equal(decoded.levels, t.levels)


def test_rounded_indices_are_counted():
    coding = TensorCoding(rows=1, row_width=4, ndim=1, has_qp_offset=False, qp_density=2, dq_flag=1,
                          cabac_unary_length_minus1=10, scan_order=0, general_profile_idc=1)
    stats = {}
    # state 0 quantizes to even indices: 3 has the wrong parity
    _encoder.encode_payload([TensorEncoding(coding, np.array([3, 0, 0, 0], np.int32))], 2, stats=stats)
    assert stats["rounded"] == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_jobs_validation(bad):
    with pytest.raises(EncoderConfigError):
        nnr.Encoder(jobs=bad)
    with pytest.raises(EncoderConfigError):
        nnr.Decoder(jobs=bad)


def test_safetensors_memory_mapped(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    from nnr.modelio import load_model
    m = {k: v for k, v in _model().items()}
    path = tmp_path / "m.safetensors"
    safetensors.save_file(m, str(path))
    mapped = load_model(path, mmap=True)
    assert not any(a.flags.owndata for a in mapped.tensors.values())     # views of the mapping
    read = load_model(path)
    assert nnr.encode(dict(mapped.tensors), jobs=2) == nnr.encode(dict(read.tensors), jobs=1)
