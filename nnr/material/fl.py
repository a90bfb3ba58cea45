"""Federated-learning simulation that produces the incremental test material: FedAvg on
scikit-learn's digits with N non-IID clients and R rounds, every update coded as an NNC
incremental bitstream (ISO/IEC 15938-17 parent signalling / parameter update tree, TCA, HDSP).
Not part of the codec; it only drives `nnr.Encoder` and `nnr.Decoder`.

Protocol (one round r = 0 .. R-1):
  * every client k starts from the global model G_r, trains `local_epochs` epochs of SGD on its
    shard and sends u_k = (W_k - G_r) + e_k (e_k: its error-feedback residual, 0 if disabled)
    with its own `nnr.Encoder(device_id=k)`; the server decodes it with a per-client `nnr.Decoder`;
  * the server averages the *decoded* updates weighted by shard size and sends a = avg + e_s on
    the downlink with one `nnr.Encoder(device_id=N)`; everybody applies the decoded downlink
    update: G_{r+1} = G_r + decode(a) (float32);
  * with error feedback, e_k <- u_k - decode(u_k) and e_s <- a - decode(a).
The downlink's first bitstream is the initial model G_0 coded as the first step of the incremental
sequence (incremental=True, as the reference codes a base), so G_0 is itself the decoded model.

Variants: the first variant (default "tca") drives the training. The other variants code exactly
the same input tensors (u_k and a of the driving run) with other coding tools, so their bytes
compare like for like; their decoders run alongside, and the model their downlink decodes to is
evaluated too. An uncompressed FedAvg baseline runs with the same seeds (same initial model,
shards and minibatch orders) and float32 updates.

Every random choice comes from numpy.random.default_rng([seed, purpose, ...]) with fixed purpose
numbers (SEED_PURPOSES), so the same configuration gives the same bytes."""
from dataclasses import asdict, dataclass, field

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.material.mlp import accuracy, init_params, train_local

SEED_PURPOSES = {"split": 1, "partition": 2, "init": 3, "local_shuffle": 4}

# variant name -> Encoder.encode flags
VARIANT_FLAGS = {
    "tca": {"tca": True, "hdsp": False},
    "notca": {"tca": False, "hdsp": False},
    "tca_hdsp": {"tca": True, "hdsp": True},
    "notca_hdsp": {"tca": False, "hdsp": True},
}


class MaterialConfigError(EncoderConfigError):
    """An option of the test-material generator is out of range."""


@dataclass
class MaterialConfig:
    clients: int = 4
    rounds: int = 5
    seed: int = 0
    hidden: tuple = (32,)             # hidden layer widths of the MLP (64 -> hidden... -> 10)
    local_epochs: int = 3
    batch_size: int = 32
    lr: float = 0.3
    alpha: float = 0.5                # Dirichlet concentration of the label split (smaller: less IID)
    test_fraction: float = 0.2
    min_client_samples: int = 20
    qp: int = -24                     # encoder options (weights / 1-D tensors), as nnr.Encoder
    nonweight_qp: int = -75
    dq: bool = True
    error_feedback: bool = True
    variants: tuple = ("tca", "notca", "tca_hdsp")

    def validate(self):
        def need(cond, what):
            if not cond:
                raise MaterialConfigError(what)
        need(1 <= self.clients <= 64, f"clients must be 1..64, not {self.clients}")
        need(1 <= self.rounds <= 1000, f"rounds must be 1..1000, not {self.rounds}")
        need(self.seed >= 0, f"seed must be >= 0, not {self.seed}")
        need(len(self.hidden) >= 1 and all(1 <= h <= 4096 for h in self.hidden),
             f"hidden layer widths must be 1..4096, not {self.hidden}")
        need(self.local_epochs >= 1 and self.batch_size >= 1 and self.lr > 0,
             "local_epochs and batch_size must be >= 1 and lr > 0")
        need(self.alpha > 0, f"alpha must be > 0, not {self.alpha}")
        need(0 < self.test_fraction < 1, f"test_fraction must be in (0, 1), not {self.test_fraction}")
        need(len(self.variants) >= 1 and all(v in VARIANT_FLAGS for v in self.variants)
             and len(set(self.variants)) == len(self.variants),
             f"variants must be distinct names from {sorted(VARIANT_FLAGS)}, not {self.variants}")

    def encoder_options(self, device_id) -> dict:
        return {"qp": self.qp, "nonweight_qp": self.nonweight_qp, "dq": self.dq, "device_id": device_id}


def seeded_rng(seed, purpose, *more):
    return np.random.default_rng([seed, SEED_PURPOSES[purpose], *more])


def seeds_description(cfg) -> dict:
    return {"seed": cfg.seed,
            "rule": "numpy.random.default_rng([seed, purpose] + extra); extra = [round, client] for "
                    "local_shuffle, none otherwise",
            "purposes": dict(SEED_PURPOSES)}


# -- data -------------------------------------------------------------------------------------
def load_data(cfg):
    """scikit-learn's digits (8x8 images, 1797 samples, shipped with the package), pixels scaled to
    [0, 1], split once by a seeded permutation into train and test."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = seeded_rng(cfg.seed, "split").permutation(len(y))
    n_test = int(round(cfg.test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def dirichlet_partition(y, n_clients, alpha, min_samples, rng):
    """Non-IID shards: each class is divided among the clients in Dirichlet(alpha) proportions.
    Redrawn (from the same generator) until every client holds at least min_samples samples."""
    classes = np.unique(y)
    min_samples = min(min_samples, len(y) // n_clients)
    for _ in range(1000):
        shards = [[] for _ in range(n_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients))[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= min_samples:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise MaterialConfigError(f"cannot split the data into {n_clients} shards of >= {min_samples} samples "
                              f"with alpha={alpha}; raise alpha or lower the number of clients")


# -- results ----------------------------------------------------------------------------------
@dataclass
class Step:
    file: str                         # path relative to the output directory
    data: bytes
    sha256: dict                      # {tensor name: nnr.checksum.tensor_sha256}, decoder output order
    omitted: list                     # input tensors the bitstream leaves out (all-zero updates)


@dataclass
class Stream:
    id: str                           # manifest entry id, also the directory of its files
    variant: str
    role: str                         # "uplink" or "downlink"
    device_id: int
    client: int = None
    steps: list = field(default_factory=list)


@dataclass
class Result:
    config: MaterialConfig
    tensors: dict                     # name -> shape
    num_parameters: int
    data_info: dict
    streams: list
    base: dict                        # the initial model: accuracy and bytes per variant
    rounds: list                      # one row per round (see run)


def _f32(d):
    return {k: np.asarray(v, dtype=np.float32) for k, v in d.items()}


class _Coder:
    """One encoder/decoder pair for one stream, recording every step."""

    def __init__(self, stream, options, flags):
        import nnr
        self.stream = stream
        self.flags = flags
        self.encoder = nnr.Encoder(**options)
        self.decoder = nnr.Decoder()

    def send(self, tensors, file) -> dict:
        from nnr.checksum import tensor_sha256
        data = self.encoder.encode(tensors, incremental=True, **self.flags)
        decoded = self.decoder.decode_tensors(data)
        coded = {t.name for t in decoded if not t.omitted}
        self.stream.steps.append(Step(file, data, {t.name: tensor_sha256(t.values) for t in decoded},
                                      [n for n in tensors if n not in coded]))
        out = {t.name: t.values for t in decoded}
        # a tensor whose first update quantizes to all zeros is omitted and, with no earlier state,
        # not output at all: for the receiver it is a zero update
        return {n: out[n] if n in out else np.zeros(np.shape(a), np.float32) for n, a in tensors.items()}


def run(cfg: MaterialConfig, on_round=None) -> Result:
    """Run the simulation; on_round(row) is called after each round (and with the base row first)."""
    cfg.validate()
    x_tr, y_tr, x_te, y_te = load_data(cfg)
    shards = dirichlet_partition(y_tr, cfg.clients, cfg.alpha, cfg.min_client_samples,
                                 seeded_rng(cfg.seed, "partition"))
    weights = np.array([len(s) for s in shards], dtype=np.float64)
    weights /= weights.sum()
    sizes = [x_tr.shape[1], *cfg.hidden, int(y_tr.max()) + 1]
    init = init_params(sizes, seeded_rng(cfg.seed, "init"))
    names = list(init)
    n_params = int(sum(v.size for v in init.values()))
    primary = cfg.variants[0]
    N = cfg.clients

    streams, up, down = [], {}, {}
    for v in cfg.variants:
        flags = VARIANT_FLAGS[v]
        for k in range(N):
            s = Stream(f"client{k}_{v}", v, "uplink", k, k)
            streams.append(s)
            up[v, k] = _Coder(s, cfg.encoder_options(k), flags)
        s = Stream(f"downlink_{v}", v, "downlink", N)
        streams.append(s)
        down[v] = _Coder(s, cfg.encoder_options(N), flags)

    def evaluate(params):
        return accuracy(params, x_te, y_te)

    # the base: the initial model as the downlink's first step
    model = {v: _f32(down[v].send(init, f"downlink_{v}/base.nnr")) for v in cfg.variants}
    baseline = {k: v.copy() for k, v in init.items()}
    base = {"accuracy": {"uncompressed": evaluate(baseline), **{v: evaluate(model[v]) for v in cfg.variants}},
            "bytes": {v: len(down[v].stream.steps[-1].data) for v in cfg.variants}}
    if on_round is not None:
        on_round({"round": "base", **base})

    zeros = {n: np.zeros_like(a) for n, a in init.items()}
    ef_client = [dict(zeros) for _ in range(N)]
    ef_server = dict(zeros)
    rows = []
    for r in range(cfg.rounds):
        g = model[primary]
        decoded_updates, baseline_updates = [], []
        up_bytes = {v: [] for v in cfg.variants}
        omitted = {v: 0 for v in cfg.variants}
        for k in range(N):
            xs, ys = x_tr[shards[k]], y_tr[shards[k]]
            train_kw = dict(epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr)
            trained = train_local(g, xs, ys, rng=seeded_rng(cfg.seed, "local_shuffle", r, k), **train_kw)
            delta = {n: (trained[n] - g[n]).astype(np.float32) for n in names}
            send = {n: delta[n] + ef_client[k][n] for n in names} if cfg.error_feedback else delta
            got = {}
            for v in cfg.variants:
                got[v] = up[v, k].send(send, f"client{k}_{v}/round{r}.nnr")
                up_bytes[v].append(len(up[v, k].stream.steps[-1].data))
                omitted[v] += len(up[v, k].stream.steps[-1].omitted)
            decoded = _f32(got[primary])
            if cfg.error_feedback:
                ef_client[k] = {n: send[n] - decoded[n] for n in names}
            decoded_updates.append(decoded)
            # the uncompressed FedAvg baseline: same shard, same minibatch order
            tb = train_local(baseline, xs, ys, rng=seeded_rng(cfg.seed, "local_shuffle", r, k), **train_kw)
            baseline_updates.append({n: (tb[n] - baseline[n]).astype(np.float32) for n in names})

        def average(updates):
            return {n: sum(w * u[n].astype(np.float64) for w, u in zip(weights, updates)).astype(np.float32)
                    for n in names}

        agg = average(decoded_updates)
        send = {n: agg[n] + ef_server[n] for n in names} if cfg.error_feedback else agg
        down_bytes = {}
        for v in cfg.variants:
            decoded = _f32(down[v].send(send, f"downlink_{v}/round{r}.nnr"))
            down_bytes[v] = len(down[v].stream.steps[-1].data)
            omitted[v] += len(down[v].stream.steps[-1].omitted)
            if v == primary and cfg.error_feedback:
                ef_server = {n: send[n] - decoded[n] for n in names}
            model[v] = {n: model[v][n] + decoded[n] for n in names}
        bavg = average(baseline_updates)
        baseline = {n: baseline[n] + bavg[n] for n in names}

        row = {"round": r,
               "accuracy": {"uncompressed": evaluate(baseline), **{v: evaluate(model[v]) for v in cfg.variants}},
               "bytes": {}, "ratio_vs_float32": {}, "bits_per_parameter": {}, "omitted_tensors": omitted}
        f32_up, f32_down = 4 * n_params * N, 4 * n_params
        for v in cfg.variants:
            ut, dt = sum(up_bytes[v]), down_bytes[v]
            row["bytes"][v] = {"up_per_client": up_bytes[v], "up_total": ut, "down": dt, "total": ut + dt}
            row["ratio_vs_float32"][v] = {"up": f32_up / ut, "down": f32_down / dt,
                                          "total": (f32_up + f32_down) / (ut + dt)}
            row["bits_per_parameter"][v] = {"up": 8 * ut / (n_params * N), "down": 8 * dt / n_params,
                                            "total": 8 * (ut + dt) / (n_params * (N + 1))}
        rows.append(row)
        if on_round is not None:
            on_round(row)

    data_info = {"dataset": "sklearn.datasets.load_digits", "features": int(x_tr.shape[1]),
                 "classes": sizes[-1], "train": int(len(y_tr)), "test": int(len(y_te)),
                 "client_samples": [int(len(s)) for s in shards],
                 "client_label_counts": [np.bincount(y_tr[s], minlength=sizes[-1]).tolist() for s in shards]}
    return Result(cfg, {n: list(init[n].shape) for n in names}, n_params, data_info, streams, base, rows)


def config_dict(cfg) -> dict:
    d = asdict(cfg)
    d["hidden"] = list(cfg.hidden)
    d["variants"] = list(cfg.variants)
    return d
