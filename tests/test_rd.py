"""nnr.rd: QP sweeps, target-PSNR / target-bpp searches, plots, nnr_rd (weighted quantization: test_weighted.py)."""
import math

import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd import search
from nnr.rd import sweep as sw


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(7)
    return {"conv.weight": (rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32),
            "conv.bias": (rng.standard_normal(16) * 0.01).astype(np.float32),
            "fc.weight": (rng.laplace(size=(10, 144)) * 0.05).astype(np.float32),
            "fc.bias": (rng.standard_normal(10) * 0.01).astype(np.float32)}


def mean_abs(decoded):
    return -float(np.mean(np.abs(decoded["fc.weight"])))


def test_sweep_table_shape_and_monotonic_size(model):
    qps = sw.parse_qp_range("-20:-36:4")
    assert qps == [-20, -24, -28, -32, -36]
    points = sw.sweep(dict(model, **{"bn.num_batches_tracked": np.array(5, dtype=np.int64)}), qps, (True, False),
                      metric=mean_abs)
    assert [(p.qp, p.dq) for p in points] == [(q, d) for d in (True, False) for q in qps]
    assert "bn.num_batches_tracked" not in points[0].tensors      # integer tensors are left out
    for dq in (True, False):
        curve = [p for p in points if p.dq == dq]
        sizes = [p.bytes for p in curve]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)   # finer QP, more bytes
        assert [p.psnr for p in curve] == sorted(p.psnr for p in curve)
        for p in curve:
            assert p.metric is not None and p.params == 16 * 27 + 16 + 1440 + 10
            assert p.bits_per_param == pytest.approx(8 * p.bytes / p.params)
            assert sum(t.bytes for t in p.tensors.values()) < p.bytes
    md = sw.table_markdown(points, "metric")
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(points) and lines[0].count("|") == 9
    assert len(sw.table_csv(points, per_tensor=True).strip().splitlines()) == 1 + 4 * len(points)


def test_psnr_definition():
    w = np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32)
    d = w + np.array([0.1, 0.0, 0.0, 0.0], dtype=np.float32)
    assert sw.psnr(w, d) == pytest.approx(10 * math.log10(4.0 / (0.01 / 4)), rel=1e-4)
    assert sw.snr(w, d) == pytest.approx(10 * math.log10(5.25 / 0.01), rel=1e-4)
    assert sw.psnr(w, w) == math.inf


def test_plot_written(model, tmp_path):
    pytest.importorskip("matplotlib")
    from nnr.rd.plot import plot_rd
    points = sw.sweep(model, [-20, -30], metric=mean_abs)
    out = plot_rd(points, str(tmp_path / "rd.png"), "metric")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("dq", [True, False])
def test_target_psnr_hits_target_with_coarsest_qp(model, dq):
    target = 38.0
    qpt = search.search_target_psnr(model, target, dq=dq)
    assert set(qpt) == {"conv.weight", "fc.weight"}
    dec = nnr.decode(nnr.encode(model, qp_per_tensor=qpt, dq=dq))
    coarser = nnr.decode(nnr.encode(model, qp_per_tensor={n: q + 1 for n, q in qpt.items()}, dq=dq))
    for n in qpt:
        assert sw.psnr(model[n], dec[n]) >= target
        assert sw.psnr(model[n], coarser[n]) < target        # one QP coarser misses it


def test_target_psnr_unreachable_raises(model):
    with pytest.raises(EncoderConfigError, match="does not reach"):
        search.search_target_psnr(model, 500.0, qp_range=(-40, -20))


def test_bisect_largest():
    assert search.bisect_largest(lambda x: x <= 3, -10, 10) == 3
    assert search.bisect_largest(lambda x: True, -10, 10) == 10
    assert search.bisect_largest(lambda x: False, -10, 10) is None


@pytest.mark.parametrize("per_tensor", [False, True])
def test_target_bpp_meets_budget(model, per_tensor):
    params = sum(v.size for v in sw.codable_tensors(model).values())
    for bpp in (3.0, 6.0):
        qpt = search.search_target_bpp(model, bpp, per_tensor=per_tensor, qp_range=(-60, 10))
        size = len(nnr.encode(model, qp_per_tensor=qpt))
        assert 8 * size / params <= bpp
        if not per_tensor:      # the finest global QP that fits
            finer = len(nnr.encode(model, qp_per_tensor={n: q - 1 for n, q in qpt.items()}))
            assert 8 * finer / params > bpp


@pytest.mark.parametrize("spec, match", [("no_colon", "module:function"), ("nnr_no_such_module_x:f", "cannot import"),
                                         ("math:no_such_function", "no attribute"), ("math:pi", "not callable")])
def test_metric_import_errors(spec, match):
    with pytest.raises(EncoderConfigError, match=match):
        sw.load_metric(spec)
    assert sw.load_metric("math:fsum") is math.fsum


def test_cli(model, tmp_path, capsys):
    from nnr.rd.cli import main
    path = tmp_path / "m.npz"
    np.savez(path, **model)
    out = str(tmp_path / "rep")
    assert main([str(path), "--qp", "-24:-32:4", "-o", out, "--no-plot", "--target-psnr", "35"]) == 0
    text = open(out + ".md").read()
    assert "target psnr 35.0" in text and text.count("\n| qp -") == 6
    assert main([str(path), "--metric", "nnr_no_such_module_x:f", "-o", out, "--no-plot"]) == 1
    assert "cannot import" in capsys.readouterr().err
