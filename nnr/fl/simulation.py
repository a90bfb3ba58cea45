"""Federated averaging on Fashion-MNIST with coded updates, in one process tree (torch, lazily).

One round r: every client k trains `local_epochs` epochs of SGD (momentum, a fresh optimizer each
round) on its shard from the global model G_r and sends its update W_k - G_r through its uplink
sender (nnr.fl.feedback.FeedbackSender around the method's coder: error feedback); the server
averages the *decoded* updates weighted by shard size and sends the average through its own
downlink sender (with its own error feedback); every node applies the decoded downlink update:
G_{r+1} = G_r + decode(downlink). The initial model G_0 is built from the common seed on every
node, for every method alike, and is not transmitted. Bytes are the lengths of the actual messages;
the downlink counts once per receiving client. Clients train in worker processes (each with one
torch thread); every random choice comes from the seed, so a method's run is reproducible and all
methods share the initial model, the split and the minibatch orders."""
import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

SEEDS = {"split": 1, "partition": 2, "init": 3, "order": 4}


@dataclass
class FedConfig:
    clients: int = 10
    alpha: float = 0.5                # Dirichlet concentration of the label split
    rounds: int = 30
    local_epochs: int = 1
    local_steps: int = 0              # > 0: this many minibatches per round instead of local_epochs
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    train_samples: int = 0            # 0: all 60,000
    test_samples: int = 0             # 0: all 10,000
    workers: int = 2                  # client-training processes
    eval_every: int = 1               # test accuracy every this many rounds (and after the last)
    data_dir: str = ""

    def validate(self):
        from nnr.errors import EncoderConfigError
        for name, lo in (("clients", 1), ("rounds", 1), ("local_epochs", 1), ("local_steps", 0), ("batch_size", 1),
                         ("workers", 1), ("eval_every", 1)):
            if int(getattr(self, name)) < lo:
                raise EncoderConfigError(f"{name} must be >= {lo}, not {getattr(self, name)}")
        if not (self.alpha > 0 and self.lr > 0 and 0 <= self.momentum < 1):
            raise EncoderConfigError("alpha and lr must be > 0 and momentum in [0, 1)")


def make_net():
    """The CNN (20,522 parameters): two 5x5 convolutions with max pooling, two fully connected layers."""
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),          # 28 -> 24 -> 12
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),         # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def initial_model(seed) -> dict:
    import torch
    torch.manual_seed(int(np.random.default_rng([seed, SEEDS["init"]]).integers(2 ** 31)))
    return {k: v.detach().numpy().copy() for k, v in make_net().state_dict().items()}


def load_split(cfg):
    """(client shards [(x, y)], x_test, y_test) of the configuration."""
    from nnr.material.fl import dirichlet_partition
    from nnr.testenv import fashion_mnist
    xtr, ytr, xte, yte = fashion_mnist.load(cfg.data_dir or None)
    rng = np.random.default_rng([cfg.seed, SEEDS["split"]])
    if cfg.train_samples:
        keep = np.sort(rng.permutation(len(ytr))[:cfg.train_samples])
        xtr, ytr = xtr[keep], ytr[keep]
    if cfg.test_samples:
        keep = np.sort(rng.permutation(len(yte))[:cfg.test_samples])
        xte, yte = xte[keep], yte[keep]
    shards = dirichlet_partition(ytr, cfg.clients, cfg.alpha, min(100, len(ytr) // (2 * cfg.clients)),
                                 np.random.default_rng([cfg.seed, SEEDS["partition"]]))
    return [(xtr[s], ytr[s]) for s in shards], xte, yte


# -- client training (in worker processes) ------------------------------------------------------
_WORKER = {}


def _init_worker(cfg_dict):
    import torch
    torch.set_num_threads(1)
    cfg = FedConfig(**cfg_dict)
    _WORKER["cfg"] = cfg
    _WORKER["shards"], _, _ = load_split(cfg)


def _train(args):
    """W_k after local training of client k in round r from the global model `state`."""
    import torch
    state, k, r = args
    cfg, (x, y) = _WORKER["cfg"], _WORKER["shards"][k]
    net = make_net()
    net.load_state_dict({n: torch.from_numpy(np.array(a)) for n, a in state.items()})
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    g = np.random.default_rng([cfg.seed, SEEDS["order"], r, k])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    if cfg.local_steps:          # a seeded draw of local_steps minibatches (reshuffled when the shard runs out)
        need = cfg.local_steps * cfg.batch_size
        order = np.concatenate([g.permutation(len(y)) for _ in range(-(-need // len(y)))])[:need]
        batches = [order[i:i + cfg.batch_size] for i in range(0, need, cfg.batch_size)]
    else:
        batches = [b for _ in range(cfg.local_epochs) for order in [g.permutation(len(y))]
                   for b in (order[i:i + cfg.batch_size] for i in range(0, len(y), cfg.batch_size))]
    for b in batches:
        b = torch.from_numpy(b)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
        opt.step()
    return {n: v.detach().numpy().copy() for n, v in net.state_dict().items()}


def accuracy(state, x, y) -> float:
    import torch
    net = make_net()
    net.load_state_dict({n: torch.from_numpy(np.array(a)) for n, a in state.items()})
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(torch.from_numpy(x[i:i + 2000])).argmax(1).numpy() == y[i:i + 2000]).sum())
                   for i in range(0, len(y), 2000))
    return hits / len(y)


# -- one method -----------------------------------------------------------------------------------
@dataclass
class RoundStats:
    round: int
    accuracy: object                  # float, or None where the round was not evaluated
    bytes_up: int
    bytes_down: int
    seconds: float


@dataclass
class MethodRun:
    method: str
    label: str
    options: dict
    rounds: list = field(default_factory=list)        # RoundStats
    seconds: float = 0.0                               # wall time of the run

    def totals(self) -> dict:
        return {"bytes_up": sum(r.bytes_up for r in self.rounds),
                "bytes_down": sum(r.bytes_down for r in self.rounds),
                "final_accuracy": 100.0 * self.rounds[-1].accuracy if self.rounds else float("nan"),
                "rounds": len(self.rounds)}

    def as_dict(self) -> dict:
        return {"method": self.method, "label": self.label, "options": self.options, **self.totals(),
                "seconds": self.seconds, "per_round": [asdict(r) for r in self.rounds]}


class Federation:
    """The data, the initial model and the worker pool, shared by the methods of one benchmark."""

    def __init__(self, cfg: FedConfig):
        cfg.validate()
        self.cfg = cfg
        self.shards, self.x_test, self.y_test = load_split(cfg)
        self.weights = np.array([len(y) for _, y in self.shards], np.float64)
        self.g0 = initial_model(cfg.seed)
        self.layout = [(n, a.shape) for n, a in self.g0.items()]
        ctx = multiprocessing.get_context("spawn")   # no fork after torch has started its threads
        self.pool = cf.ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                                           initargs=(asdict(cfg),))

    def close(self):
        self.pool.shutdown(cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def params(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.layout)

    def run(self, method, label, up, down, options=None, on_round=None, save_dir=None, on_message=None) -> MethodRun:
        """Train cfg.rounds rounds with the uplink coders up(k) (client k) and the downlink coder down()
        (None: float32 messages are not coded at all, only counted). save_dir: every message written
        as <save_dir>/up/r<round>_c<client>.bin and <save_dir>/down/r<round>.bin. on_message(direction,
        round, client, data) sees every message as it is sent ("up" with the client's index, "down"
        with None; rounds from 0)."""
        from nnr.fl.feedback import FeedbackSender
        cfg = self.cfg
        senders = [FeedbackSender(up(k)) for k in range(cfg.clients)]
        receivers = [s.coder.decoder() for s in senders]
        down_sender = FeedbackSender(down())
        down_receiver = down_sender.coder.decoder()
        if save_dir:
            for sub in ("up", "down"):
                os.makedirs(os.path.join(save_dir, sub), exist_ok=True)
        g = {n: a.astype(np.float32) for n, a in self.g0.items()}
        out = MethodRun(method, label, dict(options or {}))
        t_run = time.perf_counter()
        for r in range(cfg.rounds):
            t0 = time.perf_counter()
            trained = list(self.pool.map(_train, [(g, k, r) for k in range(cfg.clients)]))
            up_bytes, total = 0, {n: np.zeros(s, np.float64) for n, s in self.layout}
            for k, w in enumerate(trained):
                data, _ = senders[k].send({n: w[n] - g[n] for n, _ in self.layout})
                up_bytes += len(data)
                if save_dir:
                    _write(os.path.join(save_dir, "up", f"r{r:03d}_c{k:02d}.bin"), data)
                if on_message:
                    on_message("up", r, k, data)
                got = receivers[k].decode(data)           # the server's decoder of client k's stream
                for n, _ in self.layout:
                    total[n] += self.weights[k] * got[n]
            avg = {n: (total[n] / self.weights.sum()).astype(np.float32) for n, _ in self.layout}
            data, _ = down_sender.send(avg)
            if save_dir:
                _write(os.path.join(save_dir, "down", f"r{r:03d}.bin"), data)
            if on_message:
                on_message("down", r, None, data)
            step = down_receiver.decode(data)             # what every client decodes
            g = {n: g[n] + step[n] for n, _ in self.layout}
            last = r + 1 == cfg.rounds
            acc = accuracy(g, self.x_test, self.y_test) if last or (r + 1) % cfg.eval_every == 0 else None
            stats = RoundStats(r + 1, acc, up_bytes, len(data) * cfg.clients, time.perf_counter() - t0)
            out.rounds.append(stats)
            if on_round:
                on_round(out, stats)
        out.seconds = time.perf_counter() - t_run
        return out


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
