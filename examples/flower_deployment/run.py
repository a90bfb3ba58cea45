"""Run the Fashion-MNIST Flower App (fashion_app/) as a local deployment: one SuperLink and one
SuperNode per client as separate processes on 127.0.0.1, `flwr run` of the app, then stop them all.

    pip install -e ".[flower,torch]"
    python -m nnr.testenv.fashion_mnist                       # the data, once
    python examples/flower_deployment/run.py [--clients 4] [--rounds 10] [--compare] [--timeout 900]

Prints per round the accuracy of the global model and the NNC bytes up and down (from the ServerApp's
result.json). --compare also runs Flower's simulation (examples/flower_fashion_mnist.py) with the same
configuration and seeds and checks that both give the same accuracies and byte counts. Every process
is stopped when the run ends, fails or exceeds --timeout (an error, not a hang)."""
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

import flower_fashion_mnist as sim  # noqa: E402  (the simulation; it shares fashion_app.task)
from fashion_app.task import config, load_result, result, run_config  # noqa: E402,F401 (config: for the tests)

from nnr.flower.deploy import DeploymentError, LocalDeployment  # noqa: E402


def deploy(cfg, workdir, *, timeout=900.0, while_running=None, echo=False, nodes=None):
    """Run the app on a fresh local deployment in `workdir`; returns (result, deployment). `nodes`
    (default cfg.clients) SuperNodes get partition ids 0, 1, ...; `while_running(dep)` is called about
    five times a second while the run goes on (tests restart nodes from it)."""
    out_dir = Path(workdir) / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = run_config(cfg)
    rc["out-dir"] = str(out_dir)
    with LocalDeployment(workdir, timeout=timeout, echo=echo) as dep:
        for i in range(cfg.clients if nodes is None else nodes):
            dep.add_node({"partition-id": i, "num-partitions": cfg.clients})
        dep.run_app(HERE, rc, while_running=while_running)
    if not (out_dir / "result.json").exists():
        log = (Path(workdir) / "logs" / "flwr-run.log").read_text(errors="replace").splitlines()
        raise DeploymentError("the ServerApp wrote no result; the end of its log:\n" + "\n".join(log[-20:]))
    return load_result(out_dir / "result.json"), dep


def simulate(cfg):
    """The same configuration in Flower's simulation; returns the result in deploy's form."""
    cfg = copy.copy(cfg)
    cfg.cpus = getattr(cfg, "cpus", 2)
    return result(sim.run(cfg, compress=cfg.compress))


COMPARED = ("accuracy", "traffic", "replies", "parameters", "resyncs")


def differences(a, b):
    """Keys of COMPARED on which two results differ."""
    return [k for k in COMPARED if a.get(k) != b.get(k)]


def table(cfg, res):
    lines = ["| round | accuracy | bytes up | bytes down | float32 bytes (up + down) "
             "| replies (partition: model check) |", "|---:|---:|---:|---:|---:|:---|"]
    for r in range(1, cfg.rounds + 1):
        reps = ", ".join(f"{p}: {'ok' if ok else 'MISMATCH'}" for p, ok in res["replies"].get(r, []))
        t = res["traffic"].get(r, {})
        if cfg.compress:
            f32 = t.get("up_float32_bytes", 0) + t.get("down_float32_bytes", 0)
            counts = f"{t.get('up_bytes', 0):,} | {t.get('down_bytes', 0):,} | {f32:,}"
        else:
            counts = "– | – | –"        # plain ArrayRecords: only NNCStrategy counts bytes
        lines.append(f"| {r} | {100 * res['accuracy'][r]:.2f} % | {counts} | {reps} |")
    return lines


def main(argv=None):
    p = sim.arg_parser(__doc__.split("\n\n")[0], markdown="flower_deployment.md")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds for the whole deployment (default %(default)s)")
    p.add_argument("--compare", action="store_true", help="also run the simulation and check the results are equal")
    p.add_argument("--float32", action="store_true", help="plain float32 ArrayRecords instead of NNC")
    p.add_argument("--workdir", help="where the processes' FLWR_HOME, logs and result go (default: a temp dir)")
    args = p.parse_args(argv)
    cfg = sim.to_config(args)
    cfg.compress = not args.float32
    if not cfg.synthetic:
        sim.Data.get(cfg)            # the data are there before any process starts
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnr-flower-deploy-")
    t0 = time.time()
    res, _ = deploy(cfg, workdir, timeout=args.timeout)
    seconds = time.time() - t0
    head = (f"Local deployment: 1 SuperLink + {cfg.clients} SuperNodes on 127.0.0.1, {cfg.rounds} rounds, "
            f"{'NNC' if cfg.compress else 'float32'}, {cfg.train_samples} training / {cfg.test_samples} test samples"
            f"{' (synthetic)' if cfg.synthetic else ''}, seed {cfg.seed}. Wall time {seconds:.0f} s "
            f"(ServerApp {res['seconds']:.0f} s).")
    lines = table(cfg, res)
    print("\n" + head + "\n" + "\n".join(lines))
    verdict = ""
    if args.compare:
        t1 = time.time()
        ref = simulate(copy.copy(cfg))
        diff = differences(res, ref)
        verdict = (f"Simulation with the same configuration and seeds ({time.time() - t1:.0f} s): "
                   + ("accuracy, bytes and replies identical in every round." if not diff else
                      f"DIFFERENT in {', '.join(diff)}."))
        print(verdict)
    if cfg.markdown:
        Path(cfg.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.markdown).write_text("# Flower + NNC: local deployment\n\n" + head + "\n\n" + "\n".join(lines)
                                      + ("\n\n" + verdict if verdict else "") + "\n")
        print(f"table written to {cfg.markdown}; logs in {workdir}/logs")
    if args.compare and diff:
        sys.exit(1)
    return res


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    main()
