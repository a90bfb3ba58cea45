"""Incremental test material from the federated benchmark's Fashion-MNIST run (benchmarks.federated,
its `nnr` method): the harness of nnr.fl.simulation trains the CNN with the coders of nnr.fl.catalog,
and every message it sends is kept. Not part of the codec.

What is recorded, besides the messages (uplink bitstreams per client, the downlink bitstreams):
  * the base: the initial model G_0 every node builds from the seed (the benchmark never sends it),
    coded as one NNC stream with every tensor NNR_PT_RAW_FLOAT, so it decodes bit-exactly to the
    model the run started from and the run stays the benchmark's own, byte for byte;
  * after each round, the global model rebuilt from the base and the decoded downlink bitstreams
    (its tensors' checksums) and the test accuracy the run measured on it (every round).

Needs torch and Fashion-MNIST (python -m nnr.testenv.fashion_mnist)."""
import time
from dataclasses import asdict, dataclass

import numpy as np

from nnr.material.fl import MaterialConfigError

DATASET = "fashion-mnist"


@dataclass
class FashionConfig:
    """The run: benchmarks.federated's defaults (10 clients, 400 rounds of 20 local steps, 1 %)."""
    clients: int = 10
    rounds: int = 400
    local_steps: int = 20
    alpha: float = 0.5                # Dirichlet concentration of the label split
    fraction: float = 0.01            # share of the update's entries a message keeps
    seed: int = 0
    train_samples: int = 0            # 0: all 60,000 training images, else a seeded subset
    test_samples: int = 0             # 0: all 10,000 test images, else a seeded subset
    workers: int = 2                  # client-training processes (the result does not depend on it)

    def validate(self):
        def need(cond, what):
            if not cond:
                raise MaterialConfigError(what)
        need(1 <= self.clients <= 64, f"clients must be 1..64, not {self.clients}")
        need(1 <= self.rounds <= 10000, f"rounds must be 1..10000, not {self.rounds}")
        need(self.local_steps >= 1, f"local steps must be >= 1, not {self.local_steps}")
        need(self.alpha > 0, f"alpha must be > 0, not {self.alpha}")
        need(0 < self.fraction <= 1, f"fraction must be in (0, 1], not {self.fraction}")
        need(self.seed >= 0, f"seed must be >= 0, not {self.seed}")
        need(self.train_samples == 0 or self.train_samples >= 10 * self.clients,
             f"train samples must be 0 (all) or >= 10 per client, not {self.train_samples}")
        need(0 <= self.test_samples, f"test samples must be >= 0, not {self.test_samples}")
        need(self.workers >= 1, f"workers must be >= 1, not {self.workers}")

    def fed_config(self):
        """The harness's configuration (nnr.fl.simulation.FedConfig; accuracy after every round)."""
        from nnr.fl.simulation import FedConfig
        return FedConfig(clients=self.clients, alpha=self.alpha, rounds=self.rounds, local_steps=self.local_steps,
                         seed=self.seed, train_samples=self.train_samples, test_samples=self.test_samples,
                         workers=self.workers, eval_every=1)

    def method(self):
        """The benchmark's `nnr` method (nnr.fl.catalog) at this fraction."""
        from nnr.fl.catalog import methods
        return methods(self.fraction)["nnr"]


@dataclass
class FashionResult:
    config: FashionConfig
    training: dict                    # the harness's FedConfig as a dict (workers left out)
    method: object                    # nnr.fl.catalog.Method
    layout: list                      # [(model tensor name, shape)], the order of the stream's element names
    base: bytes                       # G_0 as one NNC stream
    up: list                          # up[k][r]: client k's bitstream of round r
    down: list                        # down[r]: the downlink bitstream of round r
    base_row: dict                    # accuracy and checksums of G_0
    rounds: list                      # one row per round (see run)
    data_info: dict
    seconds: float = 0.0

    @property
    def num_parameters(self) -> int:
        return int(sum(int(np.prod(s)) for _, s in self.layout))


def element_layout(method, layout) -> list:
    """Where each model tensor is in the update streams: [{"element", "name", "shape"}], plus
    "offset" (into the element's values) when the coder packs the whole update into one element."""
    from nnr.fl.methods import flat_element_name
    o = method.options
    if o.get("packing", "tensors") == "flat":
        out, off = [], 0
        for n, s in layout:
            out.append({"element": flat_element_name(o.get("element_names", "model")), "name": n,
                        "shape": [int(d) for d in s], "offset": off})
            off += int(np.prod(s))
        return out
    indexed = o.get("element_names", "model") == "index"
    return [{"element": str(i) if indexed else n, "name": n, "shape": [int(d) for d in s]}
            for i, (n, s) in enumerate(layout)]


def encode_base(g0) -> bytes:
    """G_0 as one NNC stream, every tensor NNR_PT_RAW_FLOAT (bit-exact), under its model name."""
    import nnr
    return nnr.Encoder(raw_float=tuple(g0)).encode(g0, incremental=False)


def _model_sha(model) -> dict:
    from nnr.checksum import tensor_sha256
    return {n: tensor_sha256(a) for n, a in model.items()}


def run(cfg: FashionConfig, on_round=None) -> FashionResult:
    """Run the benchmark's nnr method on Fashion-MNIST; on_round(row) after the base and each round."""
    import nnr
    from nnr.fl.simulation import Federation, accuracy
    cfg.validate()
    method = cfg.method()
    fed_cfg = cfg.fed_config()
    t0 = time.perf_counter()
    with Federation(fed_cfg) as fed:
        layout = [(n, tuple(int(d) for d in s)) for n, s in fed.layout]
        g0 = {n: a.astype(np.float32) for n, a in fed.g0.items()}
        base = encode_base(g0)
        model = {n: np.asarray(a, np.float32) for n, a in nnr.Decoder().decode(base).items()}
        base_row = {"round": "base", "accuracy": accuracy(model, fed.x_test, fed.y_test), "bytes": len(base),
                    "model_sha256": _model_sha(model)}
        if on_round is not None:
            on_round(base_row)
        up = [[] for _ in range(cfg.clients)]
        down = []
        receiver = method.down(layout).decoder()      # what every client decodes: the model's own check
        pending = {}

        def on_message(direction, r, k, data):
            nonlocal model
            if direction == "up":
                up[k].append(data)
                return
            down.append(data)
            step = receiver.decode(data)
            model = {n: model[n] + step[n] for n, _ in layout}
            pending["sha"] = _model_sha(model)

        rows = []

        def round_done(run_, stats):
            r = stats.round - 1
            ups = [len(up[k][r]) for k in range(cfg.clients)]
            row = _row(r, stats.accuracy, ups, len(down[r]), sum(int(np.prod(s)) for _, s in layout))
            row["model_sha256"] = pending.pop("sha")
            row["seconds"] = round(stats.seconds, 3)
            rows.append(row)
            if on_round is not None:
                on_round(row)

        fed.run(method.key, method.label, lambda k: method.up(layout, k), lambda: method.down(layout),
                options=method.options, on_round=round_done, on_message=on_message)
        data_info = {"dataset": "Fashion-MNIST (Debian's dataset-fashion-mnist; nnr.testenv.fashion_mnist)",
                     "train": int(sum(len(y) for _, y in fed.shards)), "test": int(len(fed.y_test)),
                     "client_samples": [int(len(y)) for _, y in fed.shards],
                     "client_label_counts": [np.bincount(y, minlength=10).tolist() for _, y in fed.shards]}
    training = {k: v for k, v in asdict(fed_cfg).items() if k not in ("workers", "data_dir")}
    return FashionResult(cfg, training, method, layout, base, up, down, base_row, rows, data_info,
                         time.perf_counter() - t0)


def _row(r, acc, up_bytes, down_bytes, n_params) -> dict:
    ut = sum(up_bytes)
    n = len(up_bytes)
    f32_up, f32_down = 4 * n_params * n, 4 * n_params
    return {"round": r, "accuracy": acc,
            "bytes": {"up_per_client": up_bytes, "up_total": ut, "down": down_bytes, "total": ut + down_bytes},
            "ratio_vs_float32": {"up": f32_up / ut, "down": f32_down / down_bytes,
                                 "total": (f32_up + f32_down) / (ut + down_bytes)},
            "bits_per_parameter": {"up": 8 * ut / (n_params * n), "down": 8 * down_bytes / n_params,
                                   "total": 8 * (ut + down_bytes) / (n_params * (n + 1))}}
