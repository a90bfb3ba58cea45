"""The Fashion-MNIST task that Flower's simulation (examples/flower_fashion_mnist.py) and the local
deployment (this app, run by `flwr run`) share: the configuration, the seeded data split, the CNN,
local training, and the builders of the ServerApp and ClientApp. Same configuration and seeds, same
result: training is seeded per (round, partition) and the server averages in partition order."""
import argparse
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np

from nnr.material.fl import dirichlet_partition

# The run configuration: `flwr run` reads these from pyproject.toml ([tool.flwr.app.config], which
# must list the same keys and defaults; a test checks it), the simulation from its command line.
DEFAULTS = {
    "clients": 4,               # partitions (one per SuperNode / simulated node)
    "rounds": 10,
    "seed": 0,
    "train-samples": 12000,     # training subset, split among the clients
    "test-samples": 2000,
    "alpha": 0.5,               # Dirichlet concentration of the label split
    "local-epochs": 1,
    "batch-size": 32,
    "lr": 0.05,
    "qp": -20,                  # uplink QP (client encoders)
    "down-qp": -24,             # downlink QP (server encoder)
    "topk": 0.5,                # uplink top-k fraction of QP-coded updates (1: no sparsification)
    "sparsify": "",             # "ternary", "sbc", "topk": each update one element with `fraction` kept, both
                                # directions (nnr.fl's coding, the federated benchmark's); "": QP-coded updates
    "fraction": 0.0,            # kept share per message with sparsify
    "synthetic": False,         # a tiny synthetic dataset instead (tests)
    "compress": True,           # NNC (nnc_mod + NNCStrategy) or plain float32 ArrayRecords
    "round-timeout": 0.0,       # seconds the server waits for replies per round (0: Flower's 3600)
    "out-dir": "",              # where the ServerApp writes result.json ('' for nowhere)
    "straggle": "",             # "partition:round:seconds[,...]": that client sleeps before training
}


def config(values=None):
    """Namespace of DEFAULTS overridden by `values` (a run config or a dict), keys with underscores."""
    cfg = {}
    for key, default in DEFAULTS.items():
        v = (values or {}).get(key, default)
        cfg[key.replace("-", "_")] = type(default)(v) if not isinstance(default, bool) else bool(v)
    cfg = argparse.Namespace(**cfg)
    if cfg.topk >= 1 or cfg.sparsify:
        cfg.topk = None                 # top-k belongs to the QP-coded updates
    cfg.sparsify = cfg.sparsify or None
    cfg.fraction = cfg.fraction or None
    return cfg


def coder_options(cfg):
    """nnc_mod's / NNCStrategy's options besides qp: sparsification, and TCA only for QP-coded updates
    (on a sparsified element it cost 0.3 % more bytes in benchmarks.federated)."""
    return dict(topk=cfg.topk, sparsify=cfg.sparsify, fraction=cfg.fraction, tca=cfg.sparsify is None)


def straggles(cfg):
    """{(partition, round): seconds} from cfg.straggle."""
    out = {}
    for item in filter(None, (s.strip() for s in cfg.straggle.split(","))):
        p, r, s = item.split(":")
        out[int(p), int(r)] = float(s)
    return out


# -- data -------------------------------------------------------------------------------------
def load_fashion_mnist(data_dir=None):
    """(x_train, y_train, x_test, y_test) from `data_dir`, else where nnr.testenv.fashion_mnist finds it."""
    from nnr.testenv import fashion_mnist
    try:
        return fashion_mnist.load(data_dir)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


class Data:
    """The seeded subset and split; built once per process (Ray actors and ClientApp processes each
    build their own)."""
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


def model_crc(arrays):
    """CRC-32 of an ArrayRecord (names and values, in name order): clients report the model they
    trained from, the server checks it against the model it holds."""
    crc = 0
    for name in sorted(arrays.keys()):
        crc = zlib.crc32(name.encode() + np.ascontiguousarray(arrays[name].numpy()).tobytes(), crc)
    return crc


# -- Flower apps ------------------------------------------------------------------------------
def make_client_app(cfg_of):
    """ClientApp; `cfg_of(context)` gives the configuration (fixed in the simulation, the run config
    in a deployment). nnr's Mod decodes NNC-coded messages and passes plain ones through."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    mods = {}

    def nnc(msg, context, call_next):
        from nnr.flower import nnc_mod
        cfg = cfg_of(context)
        key = (cfg.qp, cfg.topk, cfg.sparsify, cfg.fraction)
        if key not in mods:
            mods[key] = nnc_mod(qp=cfg.qp, **coder_options(cfg))
        return mods[key](msg, context, call_next)

    app = ClientApp(mods=[nnc])

    @app.train()
    def train(msg, context):
        import torch  # noqa: F401 (flwr's to_torch_state_dict needs torch imported)
        cfg = cfg_of(context)
        partition = int(context.node_config["partition-id"])
        parts = int(context.node_config.get("num-partitions", cfg.clients))
        if parts != cfg.clients:
            raise ValueError(f"this node is one of {parts} partitions, the run config says clients = {cfg.clients}")
        server_round = int(msg.content["config"]["server-round"])
        delay = straggles(cfg).get((partition, server_round))
        if delay:
            if cfg.out_dir:
                Path(cfg.out_dir, f"straggle-p{partition}-r{server_round}").write_text(str(os.getpid()))
            time.sleep(delay)
        x, y = Data.get(cfg).shards[partition]
        received = msg.content["arrays"]
        new = train_local(received.to_torch_state_dict(), x, y, cfg, server_round, partition)
        return Message(RecordDict({"arrays": ArrayRecord({k: v.detach().clone() for k, v in new.items()}),
                                   "metrics": MetricRecord({"num-examples": len(y), "partition-id": partition,
                                                            "model-crc32": model_crc(received)})}),
                       reply_to=msg)

    return app


def make_server_app(cfg_of, out):
    """ServerApp; `out` (a dict) receives the accuracy per round, the replies (partition, whether the
    client trained from the model the server holds), the strategy and, if cfg.out_dir is set, goes to
    out_dir/result.json (see `result`)."""
    from flwr.app import ArrayRecord, MetricRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def main(grid, context):
        t0 = time.time()
        cfg = cfg_of(context)

        class PartitionOrderFedAvg(FedAvg):
            """FedAvg over the replies in partition order: the float32 sums, and so the runs, do not
            depend on the order in which the clients happen to finish. Records what each client held."""

            def configure_train(self, server_round, arrays, config, grid):
                held = out["strategy"].global_record() if cfg.compress else arrays
                out.setdefault("held", {})[server_round] = model_crc(held)
                return super().configure_train(server_round, arrays, config, grid)

            def aggregate_train(self, server_round, replies):
                replies = list(replies)
                ok = sorted((m for m in replies if not m.has_error()),
                            key=lambda m: int(m.content["metrics"]["partition-id"]))
                out.setdefault("replies", {})[server_round] = [
                    [int(m.content["metrics"]["partition-id"]),
                     int(m.content["metrics"]["model-crc32"]) == out["held"][server_round]] for m in ok]
                return super().aggregate_train(server_round, ok + [m for m in replies if m.has_error()])

        strategy = PartitionOrderFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.clients,
                                        min_available_nodes=cfg.clients)
        if cfg.compress:
            from nnr.flower import NNCStrategy
            strategy = NNCStrategy(strategy, qp=cfg.down_qp, **coder_options(cfg))
        out["strategy"] = strategy
        data = Data.get(cfg)

        def evaluate(server_round, arrays):
            import torch  # noqa: F401 (flwr's to_torch_state_dict needs torch imported)
            acc = accuracy(arrays.to_torch_state_dict(), data.x_test, data.y_test)
            out.setdefault("accuracy", {})[server_round] = acc
            out.setdefault("round_end", {})[server_round] = round(time.time() - t0, 1)
            return MetricRecord({"accuracy": acc})

        init = ArrayRecord(initial_state(cfg))
        out["parameters"] = sum(int(np.prod(a.shape)) for a in init.values())
        strategy.start(grid=grid, initial_arrays=init, num_rounds=cfg.rounds, evaluate_fn=evaluate,
                       timeout=cfg.round_timeout or 3600)
        out["seconds"] = time.time() - t0
        if cfg.out_dir:
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            Path(cfg.out_dir, "result.json").write_text(json.dumps(result(out), indent=1))

    return app


def result(out):
    """A run as plain data: accuracy, traffic and replies per round (round numbers as ints), parameter
    count, resynchronisations; and the ServerApp's seconds (in all, at the end of each round)."""
    strategy = out.get("strategy")
    return {"accuracy": dict(out.get("accuracy", {})),
            "traffic": dict(getattr(strategy, "traffic", {}) or {}),
            "replies": dict(out.get("replies", {})),
            "parameters": out.get("parameters"),
            "resyncs": list(getattr(strategy, "resyncs", []) or []),
            "seconds": out.get("seconds"),
            "round_end": dict(out.get("round_end", {}))}


def load_result(path):
    """result.json -> the dict `result` gave (JSON's string keys back to round numbers)."""
    r = json.loads(Path(path).read_text())
    for key in ("accuracy", "traffic", "replies", "round_end"):
        r[key] = {int(k): v for k, v in r[key].items()}
    return r


def run_config(cfg):
    """The configuration as `flwr run --run-config` overrides (the inverse of `config`)."""
    out = {}
    for key, default in DEFAULTS.items():
        v = getattr(cfg, key.replace("-", "_"))
        out[key] = type(default)({"topk": 1.0, "sparsify": "", "fraction": 0.0}[key] if v is None else v)
    return out
