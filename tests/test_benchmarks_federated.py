"""benchmarks.federated: a short run of all four methods through the real harness (Fashion-MNIST, worker
processes, error feedback), its JSON table and saved messages; the saved NNC streams decode with nnr
and, where it is installed, the reference, to the tensors the run applied."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.testenv import fashion_mnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("matplotlib") is not None
pytestmark = [
    pytest.mark.skipif(not HAVE_TORCH, reason="torch and matplotlib are needed (python -m nnr.testenv)"),
    pytest.mark.skipif(fashion_mnist.find() is None, reason="Fashion-MNIST is needed: python -m nnr.testenv.fashion_mnist"),
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("federated")
    cmd = [sys.executable, "-m", "benchmarks.federated", "--quick", "--json", str(out / "fl.json"),
           "--markdown", str(out / "fl.md"), "--plot", str(out / "fl.png"), "--save-streams", str(out / "streams")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "fl.json") as f:
        return out, json.load(f)


def test_table_has_every_method_with_counted_bytes(quick):
    out, result = quick
    rows = {r["method"]: r for r in result["methods"]}
    assert set(rows) == {"float32", "dgc", "sbc", "nnr"}
    params = result["meta"]["parameters"]
    cfg = result["meta"]["config"]
    for key, r in rows.items():
        assert r["rounds"] == cfg["rounds"] and 0 <= r["final_accuracy"] <= 100
        up = sum(os.path.getsize(out / "streams" / key / "up" / f) for f in os.listdir(out / "streams" / key / "up"))
        down = sum(os.path.getsize(out / "streams" / key / "down" / f)
                   for f in os.listdir(out / "streams" / key / "down"))
        assert r["bytes_up"] == up and r["bytes_down"] == down * cfg["clients"]     # counted from the messages
        assert len(os.listdir(out / "streams" / key / "up")) == cfg["rounds"] * cfg["clients"]
    assert rows["float32"]["bytes_up"] == 4 * params * cfg["clients"] * cfg["rounds"]
    assert rows["float32"]["ratio_vs_float32"] == 1.0
    for key in ("dgc", "sbc", "nnr"):
        assert rows[key]["bytes_total"] < rows["float32"]["bytes_total"] / 20
    assert os.path.getsize(out / "fl.png") > 1000
    assert "| nnr: NNC incremental stream" in (out / "fl.md").read_text()


def _layout(result):
    from nnr.fl.simulation import initial_model
    return [(n, a.shape) for n, a in initial_model(result["meta"]["config"]["seed"]).items()]


def test_saved_nnc_streams_rebuild_the_evaluated_model(quick):
    """Each saved uplink/downlink sequence decodes with a fresh nnr.Decoder, step by step, and the
    downlink steps add up to the model whose accuracy the run reported."""
    out, result = quick
    from nnr.fl.simulation import accuracy, initial_model, load_split, FedConfig
    cfg = FedConfig(**{k: v for k, v in result["meta"]["config"].items()})
    layout = _layout(result)
    g = {n: a.astype(np.float32) for n, a in initial_model(cfg.seed).items()}
    from benchmarks.federated.methods import methods
    dec = methods(0.01)["nnr"].down(layout).decoder()      # the receiver the run's clients had
    down = sorted(os.listdir(out / "streams" / "nnr" / "down"))
    for f in down:
        step = dec.decode((out / "streams" / "nnr" / "down" / f).read_bytes())
        g = {n: g[n] + step[n] for n, _ in layout}
    _, x_test, y_test = load_split(cfg)
    final = {r["method"]: r for r in result["methods"]}["nnr"]["final_accuracy"]
    assert round(100 * accuracy(g, x_test, y_test), 2) == final
    for c in range(cfg.clients):
        d = nnr.Decoder()
        for r in range(cfg.rounds):
            d.decode((out / "streams" / "nnr" / "up" / f"r{r:03d}_c{c:02d}.bin").read_bytes())


def test_saved_nnc_streams_decode_alike_in_the_reference(quick, tmp_path):
    from tests.interop.reference import find_reference, run_jobs
    reference, why = find_reference()
    if reference is None:
        pytest.skip(f"interop: {why}")
    out, result = quick
    cfg = result["meta"]["config"]
    seqs = {"down": [f"r{r:03d}.bin" for r in range(cfg["rounds"])]}
    for c in range(cfg["clients"]):
        seqs[f"up{c}"] = [f"r{r:03d}_c{c:02d}.bin" for r in range(cfg["rounds"])]
    for name, files in seqs.items():
        d = tmp_path / name
        d.mkdir()
        (d / "job.json").write_text(json.dumps({"op": "decode_steps", "steps": len(files), "hdsp": True}))
        sub = "down" if name == "down" else "up"
        for k, f in enumerate(files):
            (d / f"step{k}_bitstream.nnc").write_bytes((out / "streams" / "nnr" / sub / f).read_bytes())
    run_jobs(reference, str(tmp_path))
    for name, files in seqs.items():
        d = tmp_path / name
        assert not (d / "error.txt").exists(), (d / "error.txt").read_text()
        ours = nnr.Decoder()
        sub = "down" if name == "down" else "up"
        for k, f in enumerate(files):
            mine = ours.decode((out / "streams" / "nnr" / sub / f).read_bytes())
            with np.load(d / f"step{k}_decoded.npz") as z:
                theirs = {n: z[n] for n in z.files}
            assert set(theirs) <= set(mine), f"{name} step {k}"
            for n in mine:
                if n in theirs:
                    assert np.array_equal(np.asarray(mine[n]), theirs[n]), f"{name} step {k} {n}"
                else:                    # an omitted zero update (HLS §13.5): absent from the reference's output
                    assert not np.any(mine[n]), f"{name} step {k} {n}: omitted but not zero"
