"""Federated learning on Fashion-MNIST: float32 FedAvg, DGC-like top-k, SBC and nnr's NNC coding of the
same training, bytes counted from the actual messages.

    python -m benchmarks.federated [--rounds 400] [--local-steps 20] [--fraction 0.01]
                                   [--methods float32,dgc,sbc,nnr] [--json FILE] [--markdown FILE]
                                   [--plot FILE.png] [--save-streams DIR] [--quick]

All 60,000 training and 10,000 test images (Debian's dataset-fashion-mnist: python -m
nnr.testenv.fashion_mnist), the CNN of nnr.fl.simulation (20,522 parameters), 10 clients with a
Dirichlet(0.5) label split; every method runs the same rounds with the same seeds (initial model,
split, minibatch orders) and local steps. See benchmarks/README.md ("Federated learning")."""
import argparse
import json
import os
import platform
import sys
import time

from benchmarks.federated import report
from benchmarks.federated.methods import methods


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.federated", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=400, help="communication rounds (default 400)")
    p.add_argument("--local-steps", type=int, default=20, help="SGD minibatches per client per round (default 20)")
    p.add_argument("--clients", type=int, default=10, help="clients (default 10)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the split (default 0.5)")
    p.add_argument("--fraction", type=float, default=0.01,
                   help="share of each tensor's entries a sparse message keeps (default 0.01)")
    p.add_argument("--nnr-fraction", type=float, default=None,
                   help="nnr's kept share (default: --fraction), which its schedule's factors scale: its "
                        "configuration may choose its own rate")
    p.add_argument("--methods", default="float32,dgc,sbc,nnr", help="comma-separated (default all four)")
    p.add_argument("--eval-every", type=int, default=10, help="test accuracy every N rounds (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="client-training processes (default 2)")
    p.add_argument("--json", help="write the table (and per-round data) here")
    p.add_argument("--markdown", help="write the Markdown table here (else it is printed)")
    p.add_argument("--plot", help="write accuracy against cumulative bytes as a PNG here")
    p.add_argument("--save-streams", metavar="DIR", help="write every message under DIR/<method>/")
    p.add_argument("--quick", action="store_true",
                   help="a short run for the tests: 3 rounds, 2 steps, 3,000 training and 1,000 test images")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from nnr.fl.simulation import FedConfig, Federation
    table = methods(args.fraction, None if args.nnr_fraction is None else {"fraction": args.nnr_fraction})
    keys = args.methods.split(",")
    unknown = [k for k in keys if k not in table]
    if unknown:
        build_parser().error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(table)}")
    cfg = FedConfig(clients=args.clients, alpha=args.alpha, rounds=args.rounds, local_steps=args.local_steps,
                    seed=args.seed, workers=args.workers, eval_every=args.eval_every)
    if args.quick:
        cfg.rounds, cfg.local_steps, cfg.train_samples, cfg.test_samples, cfg.eval_every = 3, 2, 3000, 1000, 1

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    runs = []
    with Federation(cfg) as fed:
        params = fed.params()
        log(f"{len(fed.shards)} clients, shard sizes {[len(y) for _, y in fed.shards]}, {params} parameters, "
            f"{cfg.rounds} rounds x {cfg.local_steps} local steps")
        for key in keys:
            m = table[key]

            def on_round(run, s, key=key):
                if s.accuracy is not None:
                    log(f"  {key:8s} round {s.round:4d}  accuracy {100 * s.accuracy:6.2f} %  "
                        f"up {s.bytes_up:9d} B  down {s.bytes_down:9d} B")
            save = os.path.join(args.save_streams, key) if args.save_streams else None
            run = fed.run(key, m.label, lambda k, m=m: m.up(fed.layout, k), lambda m=m: m.down(fed.layout),
                          options=m.options, on_round=on_round, save_dir=save)
            runs.append(run)
    meta = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "seconds": time.perf_counter() - t_start, "parameters": params,
            "config": vars(cfg).copy()}
    rows = report.rows(runs, params, cfg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "methods": rows, "runs": [r.as_dict() for r in runs]},
                      f, indent=1)
    md = report.markdown(rows, meta)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    else:
        print(md)
    if args.plot:
        report.plot(runs, params, cfg, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
