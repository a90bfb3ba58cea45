"""Federated learning on Flower with NNC-coded model updates: a small CNN on Fashion-MNIST.

Runs Flower's simulation twice with the same seeds (initial model, non-IID split, minibatch orders):
once with plain float32 ArrayRecords (the baseline) and once with nnr's client Mod (`nnc_mod`) and
server strategy wrapper (`NNCStrategy` around FedAvg), which send every model update as an NNC
incremental bitstream (ISO/IEC 15938-17: parent signalling / parameter update tree, TCA, dependent
quantization, error feedback; uplink top-k sparsification). Prints per round the accuracy of both
runs and the bytes up and down, and writes the table as Markdown (`--markdown PATH`; by default
flower_fashion_mnist.md in a folder of the system's temporary directory, whose path it prints).

    pip install -e ".[flower,torch]"                 # flwr, ray (Flower's simulation backend), torch
    python -m nnr.testenv.fashion_mnist              # the data (Debian's dataset-fashion-mnist), once
    python examples/flower_fashion_mnist.py [--clients 4] [--rounds 10] [--qp -20] [--topk 0.5]
                                            [--sparsify ternary --fraction 0.1]

Accounting: bytes are those of the actual bitstreams (plus the tiny JSON manifest of names and
shapes sent with the first bitstream of a stream); "float32" is what the same messages cost as
float32 arrays (4 bytes x parameters per message; Flower's own framing left out on both sides).
Down = the model sent to the clients before they train in that round (round 1: the initial model),
counted once per receiving client. Evaluation is centralised (the server evaluates the global
model on a held-out test subset): in the NNC run that is exactly the model the clients decode.

The configuration, data, model, training and the ServerApp/ClientApp are those of the Flower App in
flower_deployment/ (fashion_app/task.py), which flower_deployment/run.py runs as a local deployment
(a SuperLink and SuperNodes as separate processes) with the same result for the same seeds."""
import argparse
import copy
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "flower_deployment"      # the Flower App of the deployment: its task module is shared
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from fashion_app.task import (DEFAULTS, Data, config, load_fashion_mnist,  # noqa: E402,F401 (the tests use it)
                              make_client_app, make_server_app)


def run(cfg, compress):
    """One simulation; returns the ServerApp's `out` (accuracy per round, strategy, ...)."""
    from flwr.simulation import run_simulation
    logging.getLogger("flwr").setLevel(logging.WARNING)     # the table is the output
    # Ray's workers unpickle the ClientApp, whose functions live in fashion_app.task
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(APP_DIR) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APP_DIR)] + paths))
    cfg = copy.copy(cfg)
    cfg.compress = compress
    out = {}
    t0 = time.time()
    run_simulation(make_server_app(lambda context: cfg, out), make_client_app(lambda context: cfg),
                   num_supernodes=cfg.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cfg.cpus, "include_dashboard": False}})
    out["seconds"] = time.time() - t0
    if len(out.get("accuracy", {})) != cfg.rounds + 1:
        raise RuntimeError(f"the {'NNC' if compress else 'baseline'} simulation did not finish all rounds "
                           f"(see Flower's log above)")
    return out


# -- report -----------------------------------------------------------------------------------
def table(cfg, base, nnc):
    traffic = nnc["strategy"].traffic
    f32_msg = 4 * base["parameters"]
    lines = ["| round | accuracy float32 | accuracy NNC | Δ (points) | bytes up NNC | bytes down NNC "
             "| bytes float32 (up + down) | ratio vs float32 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = {"up": 0, "down": 0, "f32": 0}
    for r in range(1, cfg.rounds + 1):
        t = traffic[r]
        f32 = t["up_float32_bytes"] + t["down_float32_bytes"]
        if f32 != f32_msg * (t["up_messages"] + t["down_messages"]):
            raise RuntimeError("float32 reference bytes disagree with the parameter count")
        tot["up"] += t["up_bytes"]
        tot["down"] += t["down_bytes"]
        tot["f32"] += f32
        a0, a1 = base["accuracy"][r], nnc["accuracy"][r]
        lines.append(f"| {r} | {100 * a0:.2f} % | {100 * a1:.2f} % | {100 * (a1 - a0):+.2f} | {t['up_bytes']:,} | "
                     f"{t['down_bytes']:,} | {f32:,} | 1/{f32 / (t['up_bytes'] + t['down_bytes']):.1f} |")
    a0, a1 = base["accuracy"][cfg.rounds], nnc["accuracy"][cfg.rounds]
    coded = tot["up"] + tot["down"]
    lines.append(f"| **all** | **{100 * a0:.2f} %** | **{100 * a1:.2f} %** | **{100 * (a1 - a0):+.2f}** | "
                 f"**{tot['up']:,}** | **{tot['down']:,}** | **{tot['f32']:,}** | **1/{tot['f32'] / coded:.1f}** |")
    summary = {"delta_points": 100 * (a1 - a0), "ratio": tot["f32"] / coded,
               "met": abs(100 * (a1 - a0)) <= 1.0 and coded * 20 < tot["f32"]}
    return lines, summary


def coding(cfg) -> str:
    """How the NNC run codes its messages, in words."""
    if cfg.sparsify:
        return (f"every update one element with {100 * cfg.fraction:g} % of it kept ({cfg.sparsify}), both "
                f"directions, the initial model on downlink qp {cfg.down_qp}")
    return f"uplink qp {cfg.qp} top-k {cfg.topk}, downlink qp {cfg.down_qp}, DQ, TCA"


def arg_parser(description, markdown="flower_fashion_mnist.md"):
    """The command line of the configuration (fashion_app.task.DEFAULTS) plus --cpus and --markdown."""
    p = argparse.ArgumentParser(description=description)
    helps = {"train-samples": "training subset, split among the clients",
             "alpha": "Dirichlet concentration of the label split", "qp": "uplink QP (client encoders)",
             "down-qp": "downlink QP (server encoder)", "topk": "uplink top-k fraction of QP-coded updates (1: no sparsification)",
             "sparsify": "ternary, sbc or topk: every update one NNC element with --fraction of it kept, "
                         "both directions (nnr.fl's coding); default: QP-coded updates",
             "fraction": "kept share per message with --sparsify"}
    for key in ("clients", "rounds", "seed", "train-samples", "test-samples", "alpha", "local-epochs",
                "batch-size", "lr", "qp", "down-qp", "topk", "sparsify", "fraction"):
        p.add_argument("--" + key, type=type(DEFAULTS[key]), default=DEFAULTS[key], help=helps.get(key))
    p.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    p.add_argument("--synthetic", action="store_true", help="a tiny synthetic dataset instead (tests)")
    p.add_argument("--markdown", default=os.path.join(tempfile.gettempdir(), "nnr-flower", markdown),
                   help="where to write the table as Markdown (default: %(default)s; '' for none)")
    return p


def to_config(args):
    """Parsed arguments -> the task configuration (+ cpus, markdown)."""
    cfg = config({k: getattr(args, k.replace("-", "_")) for k in DEFAULTS if hasattr(args, k.replace("-", "_"))})
    cfg.cpus, cfg.markdown = args.cpus, args.markdown
    return cfg


def parse_args(argv=None):
    return to_config(arg_parser(__doc__.split("\n\n")[0]).parse_args(argv))


def main(argv=None):
    cfg = parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not cfg.synthetic:
        Data.get(cfg)                 # the data are there (before Ray starts), and cached for this process
    t0 = time.time()
    base = run(cfg, compress=False)
    nnc = run(cfg, compress=True)
    lines, summary = table(cfg, base, nnc)
    seconds = time.time() - t0
    head = (f"{cfg.clients} clients (Dirichlet alpha {cfg.alpha}), {cfg.rounds} rounds, "
            f"{cfg.train_samples} training / {cfg.test_samples} test samples, CNN with {base['parameters']:,} "
            f"parameters; NNC: {coding(cfg)}, error feedback. Run time {seconds:.0f} s (baseline {base['seconds']:.0f} s, NNC {nnc['seconds']:.0f} s).")
    verdict = (f"Final accuracy difference {summary['delta_points']:+.2f} points at 1/{summary['ratio']:.1f} of the "
               f"float32 bytes: target (within 1 point at < 1/20) {'met' if summary['met'] else 'NOT met'}.")
    print()
    print(head)
    print("\n".join(lines))
    print(verdict)
    if cfg.markdown:
        cmd = "python examples/flower_fashion_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(cfg.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.markdown).write_text(
            "# Flower + NNC on Fashion-MNIST\n\nOutput of `" + cmd.strip() + "` (2 cores).\n\n" + head + "\n\n"
            + "\n".join(lines) + "\n\n" + verdict + "\n\n" + ACCOUNTING + "\n")
        print(f"table written to {cfg.markdown}")
    return summary


ACCOUNTING = ("Bytes: the actual NNC bitstreams (plus the JSON manifest of names and shapes that goes with a "
              "stream's first bitstream); float32: 4 bytes per parameter per message, Flower's framing left "
              "out on both sides. Down is counted once per receiving client and is the model the clients "
              "train on in that round (round 1: the initial model). Accuracy: the global model on the test "
              "subset after the round; in the NNC run the model the clients decode.")

if __name__ == "__main__":
    main()
