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

Accounting: bytes are those of the actual bitstreams (plus the tiny JSON manifest of names and
shapes sent with the first bitstream of a stream); "float32" is what the same messages cost as
float32 arrays (4 bytes x parameters per message; Flower's own framing left out on both sides).
Down = the model sent to the clients before they train in that round (round 1: the initial model),
counted once per receiving client. Evaluation is centralised (the server evaluates the global
model on a held-out test subset): in the NNC run that is exactly the model the clients decode."""
import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nnr.material.fl import dirichlet_partition

HERE = Path(__file__).resolve().parent


# -- data -------------------------------------------------------------------------------------
def load_fashion_mnist(data_dir=None):
    """(x_train, y_train, x_test, y_test) from `data_dir`, else where nnr.testenv.fashion_mnist finds it."""
    from nnr.testenv import fashion_mnist
    try:
        return fashion_mnist.load(data_dir)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


class Data:
    """The seeded subset and split; built once per process (Ray actors each build their own)."""
    _cache = {}

    @classmethod
    def get(cls, cfg):
        key = (cfg.seed, cfg.clients, cfg.train_samples, cfg.test_samples, cfg.alpha, cfg.synthetic)
        if key not in cls._cache:
            cls._cache[key] = cls(cfg)
        return cls._cache[key]

    def __init__(self, cfg):
        rng = np.random.default_rng([cfg.seed, 1])
        if cfg.synthetic:            # tiny stand-in for tests: class-dependent blobs in 28x28
            n = cfg.train_samples + cfg.test_samples
            y = rng.integers(0, 10, n)
            proto = rng.normal(0, 1, (10, 1, 28, 28)).astype(np.float32)
            x = (proto[y] + rng.normal(0, 0.5, (n, 1, 28, 28))).astype(np.float32)
            xtr, ytr, xte, yte = x[:cfg.train_samples], y[:cfg.train_samples], x[cfg.train_samples:], y[cfg.train_samples:]
        else:
            xtr, ytr, xte, yte = load_fashion_mnist()
            tr = rng.permutation(len(ytr))[:cfg.train_samples]
            te = rng.permutation(len(yte))[:cfg.test_samples]
            xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
        self.x_test, self.y_test = xte, yte
        shards = dirichlet_partition(ytr, cfg.clients, cfg.alpha, min(100, len(ytr) // (2 * cfg.clients)),
                                     np.random.default_rng([cfg.seed, 2]))
        self.shards = [(xtr[s], ytr[s]) for s in shards]


# -- model ------------------------------------------------------------------------------------
def make_net():
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),          # 28 -> 24 -> 12
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),         # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def initial_state(cfg):
    import torch
    torch.manual_seed(cfg.seed)
    return make_net().state_dict()


def train_local(state, x, y, cfg, server_round, partition):
    import torch
    torch.set_num_threads(1)
    net = make_net()
    net.load_state_dict(state)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    g = np.random.default_rng([cfg.seed, 3, server_round, partition])
    xt, yt = torch.tensor(x), torch.tensor(y)        # copies: shards may arrive read-only
    net.train()
    for _ in range(cfg.local_epochs):
        order = torch.from_numpy(g.permutation(len(y)))
        for i in range(0, len(y), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    return net.state_dict()


def accuracy(state, x, y):
    import torch
    net = make_net()
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# -- Flower apps ------------------------------------------------------------------------------
def make_client_app(cfg, compress):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    mods = []
    if compress:
        from nnr.flower import nnc_mod
        mods = [nnc_mod(qp=cfg.qp, topk=cfg.topk)]
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg, context):
        import torch
        partition = int(context.node_config["partition-id"])
        x, y = Data.get(cfg).shards[partition]
        state = msg.content["arrays"].to_torch_state_dict()
        new = train_local(state, x, y, cfg, int(msg.content["config"]["server-round"]), partition)
        return Message(RecordDict({"arrays": ArrayRecord({k: v.detach().clone() for k, v in new.items()}),
                                   "metrics": MetricRecord({"num-examples": len(y), "partition-id": partition})}),
                       reply_to=msg)

    return app


def make_server_app(cfg, compress, out):
    """`out` (a dict) receives the accuracy per round and the strategy (its traffic counts)."""
    from flwr.app import ArrayRecord, MetricRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def main(grid, context):
        class PartitionOrderFedAvg(FedAvg):
            """FedAvg over the replies in partition order: the float32 sums, and so both runs, do not
            depend on the order in which the simulated clients happen to finish."""

            def aggregate_train(self, server_round, replies):
                replies = sorted(replies, key=lambda m: int(m.content["metrics"]["partition-id"]))
                return super().aggregate_train(server_round, replies)

        strategy = PartitionOrderFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.clients,
                                        min_available_nodes=cfg.clients)
        if compress:
            from nnr.flower import NNCStrategy
            strategy = NNCStrategy(strategy, qp=cfg.down_qp)
        out["strategy"] = strategy
        data = Data.get(cfg)

        def evaluate(server_round, arrays):
            acc = accuracy(arrays.to_torch_state_dict(), data.x_test, data.y_test)
            out.setdefault("accuracy", {})[server_round] = acc
            return MetricRecord({"accuracy": acc})

        init = ArrayRecord(initial_state(cfg))
        out["parameters"] = sum(int(np.prod(a.shape)) for a in init.values())
        strategy.start(grid=grid, initial_arrays=init, num_rounds=cfg.rounds, evaluate_fn=evaluate)

    return app


def run(cfg, compress):
    from flwr.simulation import run_simulation
    logging.getLogger("flwr").setLevel(logging.WARNING)     # the table is the output
    out = {}
    t0 = time.time()
    run_simulation(make_server_app(cfg, compress, out), make_client_app(cfg, compress),
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, default=12000, help="training subset, split among the clients")
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the label split")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--qp", type=int, default=-20, help="uplink QP (client encoders)")
    p.add_argument("--down-qp", type=int, default=-24, help="downlink QP (server encoder)")
    p.add_argument("--topk", type=float, default=0.5, help="uplink top-k fraction (1: no sparsification)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    p.add_argument("--synthetic", action="store_true", help="a tiny synthetic dataset instead (tests)")
    p.add_argument("--markdown", default=os.path.join(tempfile.gettempdir(), "nnr-flower", "flower_fashion_mnist.md"),
                   help="where to write the table as Markdown (default: %(default)s; '' for none)")
    return p.parse_args(argv)


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.topk >= 1:
        cfg.topk = None
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
            f"parameters; NNC: uplink qp {cfg.qp} top-k {cfg.topk}, downlink qp {cfg.down_qp}, DQ, TCA, "
            f"error feedback. Run time {seconds:.0f} s (baseline {base['seconds']:.0f} s, NNC {nnc['seconds']:.0f} s).")
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
