"""The Flower App of examples/flower_deployment on a real local deployment: one SuperLink and two
SuperNodes as separate processes on 127.0.0.1, `flwr run` (nnr.flower.deploy). It gives the same
result as Flower's simulation with the same seeds, and resynchronises after a lost reply and a
SuperNode stopped and restarted mid-round. No process of a deployment is left afterwards."""
import importlib.util
import os
import signal
import sys
import threading
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower_deployment"
HAVE = {m: importlib.util.find_spec(m) is not None for m in ("flwr", "ray", "torch")}
needs_flwr = pytest.mark.skipif(not HAVE["flwr"], reason='flwr not installed (pip install "nnr[flower]")')
needs_deployment = pytest.mark.skipif(
    not all(HAVE.values()) or not os.path.isdir("/proc"),
    reason="needs flwr, ray (the simulation to compare with), torch (the app) and /proc (process checks)")

SHORT = {"clients": 2, "rounds": 2, "synthetic": True, "train-samples": 400, "test-samples": 200, "alpha": 5.0,
         "local-epochs": 2}


def deployment_example():
    """examples/flower_deployment/run.py as a module (its imports put the app on sys.path)."""
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("flower_deployment_run", APP / "run.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = path
    return mod


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A deployment's folder; afterwards no process it started (logs/pids) or that carries its
    marker (every descendant: Flower starts some in sessions of their own) may be alive."""
    from nnr.flower.deploy import alive, processes_of
    # the SuperNodes' ClientApps and Ray's workers import nnr from this tree, the app from APP
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), str(APP),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    work = tmp_path / "deployment"
    yield work
    listed = (work / "logs" / "pids").read_text().split("\n") if (work / "logs" / "pids").exists() else []
    started = [int(line.split()[0]) for line in listed if line.strip()]
    left = sorted(set(p for p in started if alive(p)) | set(processes_of(work)))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert started, "the deployment started no process"
    assert not left, f"processes of the deployment still running after it ended: {left}"


@needs_flwr
def test_app_config_matches_the_task_defaults():
    """pyproject.toml's [tool.flwr.app.config] is fashion_app.task.DEFAULTS (flwr reads the one, the
    simulation the other), and it is a valid Flower App for this flwr."""
    from flwr.cli.config_utils import load_and_validate
    sys.path.insert(0, str(APP))
    try:
        from fashion_app.task import DEFAULTS
    finally:
        sys.path.remove(str(APP))
    config = tomllib.loads((APP / "pyproject.toml").read_text())
    assert config["tool"]["flwr"]["app"]["config"] == DEFAULTS
    assert "federations" not in config["tool"]["flwr"]     # flwr 1.42 would migrate it, rewriting the file
    load_and_validate(APP / "pyproject.toml", check_module=False)


@needs_deployment
@pytest.mark.parametrize("coding", [{}, {"sparsify": "ternary", "fraction": 0.3}], ids=["qp", "ternary"])
def test_deployment_equals_simulation(workdir, coding):
    """2 SuperNodes, 2 rounds, NNC (QP-coded updates, or each update one ternary element as in the
    federated benchmark): per-round accuracy, bytes up and down, and the model check of every reply
    are those of Flower's simulation with the same configuration and seeds."""
    ex = deployment_example()
    cfg = ex.config(SHORT | coding)
    got = {}

    def deploy():
        try:
            got["deployment"] = ex.deploy(cfg, workdir, timeout=240)[0]
        except BaseException as e:     # noqa: B036 (re-raised in the test's thread)
            got["error"] = e

    thread = threading.Thread(target=deploy)    # the deployment mostly waits: the simulation runs meanwhile
    thread.start()
    try:
        sim = ex.simulate(cfg)
    finally:
        thread.join(300)
    if "error" in got:
        raise got["error"]
    dep = got["deployment"]
    assert sorted(dep["accuracy"]) == [0, 1, 2] and dep["accuracy"][2] > 0.5
    assert dep["replies"] == {1: [[0, True], [1, True]], 2: [[0, True], [1, True]]}
    assert dep["resyncs"] == []
    assert ex.differences(dep, sim) == [], {k: (dep[k], sim[k]) for k in ex.differences(dep, sim)}


@needs_deployment
def test_deployment_resynchronises_a_lost_reply_and_a_restarted_node(workdir):
    """Round 2: partition 1 replies after the round's timeout (its reply is lost: the server misses an
    uplink bitstream and its acknowledgement), and partition 0's SuperNode is stopped mid-round and a
    new one started (its Context.state is lost; it registers with a new node id). Round 3: partition 1
    gets the downlink bitstream it had not acknowledged again and restarts its uplink stream;
    partition 0 gets every bitstream from the base on. Both train from exactly the server's model."""
    ex = deployment_example()
    timeout = 40.0                     # per round: well above a round of this size on 2 busy cores
    cfg = ex.config(dict(SHORT, rounds=3, **{"round-timeout": timeout, "straggle": f"1:2:{timeout},0:2:600"}))
    restarted = []

    def restart_node_0(dep):
        if not restarted and (workdir / "out" / "straggle-p0-r2").exists():
            dep.stop_node(0)           # mid-round: its ClientApp is in round 2
            restarted.append(dep.add_node({"partition-id": 0, "num-partitions": 2}))

    res, _ = ex.deploy(cfg, workdir, timeout=300, while_running=restart_node_0)
    assert restarted
    assert res["replies"] == {1: [[0, True], [1, True]], 2: [], 3: [[0, True], [1, True]]}
    assert [(r, e) for r, _, e, _ in res["resyncs"]] == [(3, "uplink-restart")]
    t = res["traffic"]
    # round 3 down: partition 1 gets bitstream 1 again (as in round 2), the new node bitstreams 0 and
    # 1 (bitstream 0 and the manifest: what each node got in round 1)
    assert t[3]["down_bytes"] == t[2]["down_bytes"] + t[1]["down_bytes"] // 2
    assert t[2]["up_messages"] == 0 and t[3]["up_messages"] == 2
    assert res["accuracy"][3] > 0.5


@needs_deployment
def test_deployment_out_of_time_is_an_error_and_stops_everything(workdir):
    """A run that cannot finish (no SuperNode ever connects) ends with DeploymentError at the time
    limit, and the fixture finds every process gone."""
    from nnr.flower.deploy import DeploymentError, LocalDeployment
    ex = deployment_example()
    with pytest.raises(DeploymentError, match="time limit of 15 s"):
        with LocalDeployment(workdir, timeout=15) as dep:
            dep.run_app(APP, ex.run_config(ex.config(SHORT)))
