"""nnr_make_test_material: the numpy MLP's gradients, a small federated run that is deterministic,
decodes back to its stored checksums (--verify) and is refused or caught when damaged. The runs need
scikit-learn (the digits data set) and skip, saying so, without it."""
import json
import os

import numpy as np
import pytest

from nnr.cli.nnr_make_test_material import main
from nnr.material.mlp import init_params, loss_and_grads

try:
    import sklearn  # noqa: F401
    NO_SKLEARN = None
except ImportError as err:
    NO_SKLEARN = f"scikit-learn is not installed ({err}); pip install 'nnr[material]'"
needs_sklearn = pytest.mark.skipif(NO_SKLEARN is not None, reason=str(NO_SKLEARN))

SMALL = ["--clients", "2", "--rounds", "2", "--hidden", "8", "-q"]


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    if NO_SKLEARN is not None:
        pytest.skip(NO_SKLEARN)
    root = tmp_path_factory.mktemp("material")
    a, b = root / "a", root / "b"
    assert main(SMALL + ["-o", str(a)]) == 0
    assert main(SMALL + ["-o", str(b)]) == 0
    return a, b


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    params = {k: v.astype(np.float64) for k, v in init_params([6, 5, 3], rng).items()}
    x, y = rng.normal(size=(7, 6)), rng.integers(0, 3, 7)
    _, grads = loss_and_grads(params, x, y)
    eps = 1e-6
    for name, p in params.items():
        for idx in list(np.ndindex(p.shape))[:6]:
            old = p[idx]
            p[idx] = old + eps
            up = loss_and_grads(params, x, y)[0]
            p[idx] = old - eps
            down = loss_and_grads(params, x, y)[0]
            p[idx] = old
            assert abs((up - down) / (2 * eps) - grads[name][idx]) < 1e-6, (name, idx)


@needs_sklearn
def test_two_runs_write_identical_files(material):
    a, b = material
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], name


@needs_sklearn
def test_manifest_layout(material):
    a, _ = material
    m = json.loads((a / "manifest.json").read_text())
    assert m["suite"] == "nnr-test-material" and m["version"] == 1
    variants = m["material"]["config"]["variants"]
    ids = {e["id"] for e in m["entries"]}
    assert ids == {f"client{k}_{v}" for k in range(2) for v in variants} | {f"downlink_{v}" for v in variants}
    for e in m["entries"]:
        assert e["kind"] == "sequence" and e["expect"] == "decode" and e["profile"] == 1
        assert e["reference_decodes"] is None and "incremental" in e["features"]
        assert ("tca" in e["features"]) == e["provenance"]["config"]["encode"]["tca"]
        assert len(e["steps"]) == (3 if e["id"].startswith("downlink") else 2)
        for step in e["steps"]:
            assert (a / step["file"]).is_file()
            assert list(step["sha256"]) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    rounds = m["material"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        for v in variants:
            assert r["bytes"][v]["total"] == r["bytes"][v]["up_total"] + r["bytes"][v]["down"]
            assert sum(r["bytes"][v]["up_per_client"]) == r["bytes"][v]["up_total"]
    assert json.loads((a / "metrics.json").read_text())["rounds"] == rounds
    assert "nnr_make_test_material --verify" in (a / "README.md").read_text()


@needs_sklearn
def test_verify_passes(material, capsys):
    a, _ = material
    assert main(["--verify", str(a)]) == 0
    assert "decode to the stored checksums" in capsys.readouterr().err


@needs_sklearn
def test_verify_catches_a_wrong_checksum(material, tmp_path, capsys):
    a, _ = material
    bad = tmp_path / "bad"
    os.makedirs(bad)
    for name, data in _files(a).items():
        os.makedirs(bad / os.path.dirname(name), exist_ok=True)
        (bad / name).write_bytes(data)
    m = json.loads((bad / "manifest.json").read_text())
    step = m["entries"][1]["steps"][1]
    step["sha256"]["fc2.bias"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(m))
    assert main(["--verify", str(bad)]) == 1
    assert "fc2.bias" in capsys.readouterr().err


@needs_sklearn
def test_verify_catches_a_damaged_bitstream(material, tmp_path):
    a, _ = material
    bad = tmp_path / "bad"
    for name, data in _files(a).items():
        os.makedirs(bad / os.path.dirname(name), exist_ok=True)
        (bad / name).write_bytes(data)
    target = bad / "client0_tca" / "round1.nnr"
    target.write_bytes(target.read_bytes()[:-3])
    assert main(["--verify", str(bad), "-q"]) == 1


@needs_sklearn
def test_refuses_a_non_empty_directory_without_force(material, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(SMALL + ["-o", str(out)]) == 2
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert main(SMALL + ["-o", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["--verify", str(out), "-q"]) == 0
