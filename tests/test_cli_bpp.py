"""nnr_encode --bpp B [--importance FILE] [--hessians FILE]: the stream fits the budget, the summary says
the mode, the importance file moves the allocation, the hessians file rounds its layers, and
meaningless combinations are usage errors."""
import subprocess
import sys

import numpy as np
import pytest

import nnr


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nnr.cli.nnr_encode", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    model = {"a.weight": rng.normal(0, 0.05, (128, 256)).astype(np.float32),
             "a.bias": rng.normal(0, 0.01, 128).astype(np.float32),
             "b.weight": rng.normal(0, 0.05, (64, 256)).astype(np.float32)}
    np.savez(tmp_path / "m.npz", **model)
    np.savez(tmp_path / "imp.npz", **{"a.weight": np.full((128, 256), 1.0, np.float32),
                                      "b.weight": np.full((64, 256), 256.0, np.float32)})
    return tmp_path, model


def test_bpp_fits_the_budget_and_says_so(files):
    tmp, model = files
    r = run("m.npz", "-o", "m.nnr", "--bpp", "3", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "budget 3 bits/parameter" in r.stdout
    n = sum(a.size for a in model.values())
    size = (tmp / "m.nnr").stat().st_size
    assert size <= int(3 * n / 8)
    # three tensors: one QP step of the largest is 1.4 % of the budget, so the fill may stop short; it says so
    assert size >= 0.995 * int(3 * n / 8) or "under the" in r.stderr


def test_importance_file_moves_the_allocation(files):
    tmp, model = files
    assert run("m.npz", "-o", "u.nnr", "--bpp", "3", cwd=tmp).returncode == 0
    r = run("m.npz", "-o", "w.nnr", "--bpp", "3", "--importance", "imp.npz", cwd=tmp)
    assert r.returncode == 0, r.stderr and "importance-weighted" in r.stdout
    qp = {}
    for name in ("u", "w"):
        dec = nnr.Decoder()
        dec.decode((tmp / f"{name}.nnr").read_bytes())
        qp[name] = {t.name: t.qp for t in dec.tensors}
    # 256 times the importance: b 4 octaves finer than a (64 QPs at qp_density 4), not so unweighted
    assert abs((qp["w"]["a.weight"] - qp["w"]["b.weight"]) - 64) <= 8
    assert abs(qp["u"]["a.weight"] - qp["u"]["b.weight"]) <= 8


@pytest.mark.parametrize("extra", [["--qp", "-30"], ["--quality", "0.05"], ["--bitdepth", "8"], ["--codebook"],
                                   ["--lossless"]])
def test_bpp_with_a_qp_choosing_flag_is_a_usage_error(files, extra):
    tmp, _ = files
    r = run("m.npz", "-o", "m.nnr", "--bpp", "3", *extra, cwd=tmp)
    assert r.returncode == 2 and "--bpp cannot be combined" in r.stderr
    assert not (tmp / "m.nnr").exists()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "x"])
def test_bad_bpp(files, bad):
    tmp, _ = files
    assert run("m.npz", "-o", "m.nnr", "--bpp", bad, cwd=tmp).returncode == 2


def test_unreadable_importance_file(files):
    tmp, _ = files
    (tmp / "bad.npz").write_bytes(b"not a zip")
    r = run("m.npz", "-o", "m.nnr", "--bpp", "3", "--importance", "bad.npz", cwd=tmp)
    assert r.returncode in (1, 2) and "bad.npz" in r.stderr and not (tmp / "m.nnr").exists()


def test_hessians_file_rounds_those_layers(files):
    tmp, model = files
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2000, 256)) @ (np.eye(256) + rng.normal(0, 0.1, (256, 256)))
    h = {"a.weight": x.T @ x}
    np.savez(tmp / "h.npz", **h)
    r = run("m.npz", "-o", "m.nnr", "--qp", "-30", "--hessians", "h.npz", cwd=tmp)
    assert r.returncode == 0, r.stderr
    dec = nnr.Decoder()
    out = dec.decode((tmp / "m.nnr").read_bytes())
    h32 = {k: v.astype(np.float32) for k, v in h.items()}        # model files carry float32: so does the tool
    want = nnr.decode(nnr.encode(model, qp=-30, hessians=h32))
    for k in model:
        np.testing.assert_array_equal(out[k], want[k])
    assert not np.array_equal(out["a.weight"], nnr.decode(nnr.encode(model, qp=-30, dq=False))["a.weight"])
    dq = {u.fields["topology_elem_id"]: u.fields["dq_flag"] for u in dec.units if "dq_flag" in u.fields}
    assert dq == {"a.weight": 0, "a.bias": 1, "b.weight": 1}


def test_a_hessian_of_the_wrong_shape_is_refused(files):
    tmp, _ = files
    np.savez(tmp / "h.npz", **{"a.weight": np.eye(128)})
    r = run("m.npz", "-o", "m.nnr", "--hessians", "h.npz", cwd=tmp)
    assert r.returncode == 1 and "hessians['a.weight']" in r.stderr and "(256, 256)" in r.stderr
    assert not (tmp / "m.nnr").exists()
