"""benchmarks.rd: the equal-metric comparison (envelopes, interpolation, savings) on hand-made curves,
and the harness's quick run on Fashion-MNIST (with the reference where it is installed)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from benchmarks.rd.curves import bits_at, envelope, saving
from nnr.testenv import fashion_mnist
from nnr.testenv.nncodec import find_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the comparison -----------------------------------------------------------------------------
def test_envelope_drops_dominated_points():
    pts = [(3.0, 0.80), (1.0, 0.70), (2.0, 0.75), (2.5, 0.74), (4.0, 0.80), (5.0, 0.81)]
    assert envelope(pts) == [(1.0, 0.70), (2.0, 0.75), (3.0, 0.80), (5.0, 0.81)]


def test_bits_at_interpolates_on_the_envelope():
    pts = [(1.0, 0.70), (2.0, 0.80), (2.5, 0.60), (3.0, 0.90)]
    assert bits_at(pts, 0.75) == (pytest.approx(1.5), "interpolated")
    assert bits_at(pts, 0.85) == (pytest.approx(2.5), "interpolated")     # (2.5, 0.60) is not on the envelope
    assert bits_at(pts, 0.65) == (1.0, "at or below")
    assert bits_at(pts, 0.95) == (None, "not reached")


def test_lower_is_better_metric():
    errs = [(1.0, 40.0), (2.0, 20.0), (3.0, 10.0), (3.5, 12.0)]
    assert envelope(errs, higher=False) == [(1.0, 40.0), (2.0, 20.0), (3.0, 10.0)]
    assert bits_at(errs, 15.0, higher=False) == (pytest.approx(2.5), "interpolated")
    assert bits_at(errs, 5.0, higher=False) == (None, "not reached")
    assert bits_at(errs, 50.0, higher=False) == (1.0, "at or below")


def test_saving():
    assert saving(3.0, 4.0) == pytest.approx(25.0)
    assert saving(5.0, 4.0) == pytest.approx(-25.0)
    assert saving(None, 4.0) is None


# -- the quick run ------------------------------------------------------------------------------
HAVE = all(importlib.util.find_spec(m) is not None for m in ("torch", "matplotlib"))


@pytest.mark.skipif(not HAVE, reason="torch and matplotlib are needed (python -m nnr.testenv)")
@pytest.mark.skipif(fashion_mnist.find() is None,
                    reason="Fashion-MNIST not found: python -m nnr.testenv.fashion_mnist fetches it")
def test_quick_run(tmp_path):
    """python -m benchmarks.rd --quick: a few minutes (trains a 1-epoch CNN on the first run and caches it)."""
    reference, _ = find_reference()
    out = tmp_path / "rd.json"
    cmd = [sys.executable, "-m", "benchmarks.rd", "--quick", "--json", str(out), "--markdown", str(tmp_path / "rd.md"),
           "--plots", str(tmp_path)]
    if reference is None:
        cmd.append("--no-reference")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = json.loads(out.read_text())["models"]
    assert m["name"] == "fmnist" and m["higher_is_better"] and 0.7 < m["float_metric"] <= 1.0
    assert (tmp_path / "rd_fmnist.png").stat().st_size > 1000
    ours = m["modes"]["reference"]["points"]
    assert [p["setting"] for p in ours] == [-24, -30, -36]
    if reference is not None:
        ref = m["reference"]["points"]
        assert [p["sha256"] for p in ref] == [p["sha256"] for p in ours]          # nnr's default = the reference
        assert all(p["same_as_reference"] for p in ours)
        assert m["reference"]["decoder_check"]["identical"] is True
        curve = ref
    else:
        curve = ours
    bpp = [p["bpp"] for p in curve]
    assert bpp == sorted(bpp) and bpp[0] < 0.7 * bpp[-1]                          # finer QP, more bits
    assert curve[-1]["metric"] >= curve[0]["metric"] - 0.02                        # monotone-ish
    assert curve[-1]["metric"] >= m["float_metric"] - 0.02                         # qp -36 is near-lossless
    for key in ("search", "weighted"):
        pts = m["modes"][key]["points"]
        assert len(pts) == 3 and all("metric" in p and 0 <= p["metric"] <= 1 for p in pts), pts
    for key in ("search",):
        assert all(p["fit_pct"] <= 1e-9 for p in m["modes"][key]["points"])          # within the budget
    for qp in ("-30", "-36"):
        row = m["summary"][qp]
        assert row["ref_bpp"] == pytest.approx(next(p["bpp"] for p in curve if p["setting"] == int(qp)))
        assert row["modes"]["reference"]["saving_pct"] >= -1e-9                   # the curve against itself
        assert row["modes"]["reference"]["saving_env_pct"] == pytest.approx(0.0, abs=1e-9)
        for key, mode in m["modes"].items():
            assert ("unavailable" in mode) != (key in row["modes"])
            if key in row["modes"] and row["modes"][key]["bpp"] is not None:
                e = row["modes"][key]
                assert e["saving_pct"] == pytest.approx(100 * (1 - e["bpp"] / row["ref_bpp"]))
    for mode in m["modes"].values():
        assert ("points" in mode) != ("unavailable" in mode)
        assert "unavailable" not in mode or mode["unavailable"].startswith("n/a (not available)")


# -- the issue 13 modes against nnr's APIs ---------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is needed (python -m nnr.testenv)")
def test_issue13_modes_call_the_apis_and_score_every_budget(monkeypatch):
    """nnr.encode(target_bpp=, importance=, sparsity=, sparsity_structured=) and nnr.importance, spied on
    (the calls go through): the modes find them, call them as documented and score every budget."""
    import torch

    import nnr
    import nnr.encoder
    from benchmarks.rd import modes, run
    from benchmarks.rd.models.spec import ModelSpec, float_tensors, loaded

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
    x = torch.randn(64, 32)
    with torch.no_grad():
        y = net(x)

    def metric(decoded):
        with loaded(net, decoded), torch.no_grad():
            return float(((net(x) - y) ** 2).mean())

    spec = ModelSpec("toy", "toy", net, float_tensors(net.state_dict()), metric, [x[:32], x[32:]], False, "mse", "toy")
    calls = []
    real_encode, real_importance = nnr.encoder.encode, nnr.importance

    def encode(tensors, **options):
        calls.append(("encode", options.get("target_bpp"), options.get("sparsity"),
                      options.get("sparsity_structured", False), "importance" in options,
                      sorted(options.get("hessians") or ())))
        return real_encode(tensors, **options)

    def importance(module, inputs, **options):
        calls.append(("importance", options.get("method"), len(list(inputs))))
        return real_importance(module, inputs, **options)

    import nnr.rd
    real_corrected = nnr.rd.encode_corrected

    def encode_corrected(module, tensors, inputs, **options):
        calls.append(("corrected", module is net, len(list(inputs)), options.get("target_bpp"),
                      "hessians" in options))
        return real_corrected(module, tensors, inputs, **options)

    monkeypatch.setattr(nnr.encoder, "encode", encode)
    monkeypatch.setattr(nnr, "importance", importance)
    monkeypatch.setattr(nnr.rd, "encode_corrected", encode_corrected)
    ctx = run.Context(spec, 1, True, 0.3, lambda msg: None, row_sparsity=0.1)
    ctx.budgets = [(-24, 2.0), (-30, 4.0), (-36, 6.0)]
    score = run.Scorer(spec, 1)
    for key in ("target", "target+imp", "target+imp+bias", "target+imp+gptq", "target+imp+gptq+bias",
                "target+imp+sparse", "target+imp+rows"):
        mode = modes.BY_KEY[key]
        assert mode.unavailable() is None, key
        pts = run.mode_curve(mode, ctx, score, lambda msg: None)
        assert [p["setting"] for p in pts] == [2.0, 4.0, 6.0] and all("metric" in p for p in pts), pts
        assert all(p["bpp"] <= p["setting"] for p in pts)                   # within the budget
    assert ctx.importance_info["source"] == "nnr.importance"
    assert ("importance", "gauss-newton", 2) in calls
    layers = sorted(k for k in spec.tensors if k.endswith("weight") and spec.tensors[k].ndim == 2)
    assert ("encode", 4.0, None, False, False, []) in calls               # target_bpp alone
    assert ("encode", 4.0, None, False, True, []) in calls                # with importance
    assert ("encode", 4.0, None, False, True, layers) in calls            # output-aware rounding of every layer
    assert ("encode", 4.0, 0.3, False, True, []) in calls                 # the encoder's sparsity
    assert ("encode", 4.0, 0.1, True, True, []) in calls                  # whole rows
    assert ("corrected", True, 2, 4.0, False) in calls                    # bias correction on the calibration
    assert ("corrected", True, 2, 4.0, True) in calls                     # ... after output-aware rounding
    assert ctx.hessians_info["tensors"] == len(layers)
    assert ctx.kl_importance_info is None                                  # not asked for yet
    for key in ("target+kl", "target+kl+bias"):
        mode = modes.BY_KEY[key]
        assert mode.unavailable() is None and mode.classifier_only and mode.costly, key
        pts = run.mode_curve(mode, ctx, score, lambda msg: None)
        assert [p["setting"] for p in pts] == [2.0, 4.0, 6.0] and all(p["bpp"] <= p["setting"] for p in pts), pts
    assert ("importance", "kl", 2) in calls and ctx.kl_importance_info["probes"] == run.KL_PROBES
    assert ("corrected", True, 2, 4.0, False) in calls
