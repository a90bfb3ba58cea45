"""nnr_make_test_material: incremental NNC test material (base + update bitstreams with checksums)
from a simulated federated training run; `--verify DIR` checks existing material."""
import argparse
import sys
import time

DATASETS = ("digits", "fashion-mnist")
# options that only one data set's run has (argparse dest -> data set)
ONLY = {"hidden": "digits", "local_epochs": "digits", "batch_size": "digits", "lr": "digits", "qp": "digits",
        "nonweight_qp": "digits", "no_dq": "digits", "no_error_feedback": "digits", "variants": "digits",
        "local_steps": "fashion-mnist", "fraction": "fashion-mnist", "train_samples": "fashion-mnist",
        "test_samples": "fashion-mnist", "workers": "fashion-mnist"}


def _defaults():
    from nnr.material.fl import MaterialConfig
    return MaterialConfig()


def _fashion_defaults():
    from nnr.material.fashion import FashionConfig
    return FashionConfig()


def _int_list(text):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one width")
    return values


def build_parser():
    d, f = _defaults(), _fashion_defaults()
    p = argparse.ArgumentParser(
        prog="nnr_make_test_material",
        description="Simulate federated training (FedAvg, N non-IID clients, R rounds), code every client update "
                    "and every global-model update as NNC incremental bitstreams and write them with checksums "
                    "and per-round metrics in the conformance suite's layout. --dataset digits (default): a numpy "
                    "MLP on scikit-learn's digits, TCA on / off and HDSP variants. --dataset fashion-mnist: the "
                    "federated benchmark's run (python -m benchmarks.federated, its nnr method: a CNN on "
                    "Fashion-MNIST), with the initial model as the base stream.")
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (created; must be empty unless --force)")
    p.add_argument("--verify", metavar="DIR", help="decode every sequence of existing material in DIR and compare "
                                                   "the checksums; exit status 1 on a mismatch")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR (earlier material there is replaced)")
    p.add_argument("--dataset", choices=DATASETS, default="digits", help="the training run (default digits)")
    p.add_argument("--reference", action="store_true",
                   help="run the reference decoder (NNCodec 2.1.3, python -m nnr.testenv.nncodec) over the material "
                        "and record in the manifest which entries it decodes")
    p.add_argument("--clients", type=int, help=f"number of clients (default {d.clients}; fashion-mnist {f.clients})")
    p.add_argument("--rounds", type=int, help=f"number of FedAvg rounds (default {d.rounds}; fashion-mnist {f.rounds})")
    p.add_argument("--seed", type=int, help=f"master seed (default {d.seed})")
    p.add_argument("--alpha", type=float,
                   help=f"Dirichlet concentration of the label split, smaller = less IID (default {d.alpha})")
    g = p.add_argument_group("digits only")
    g.add_argument("--hidden", type=_int_list,
                   help=f"hidden layer widths, comma-separated (default {','.join(map(str, d.hidden))})")
    g.add_argument("--local-epochs", type=int, help=f"local epochs per round (default {d.local_epochs})")
    g.add_argument("--batch-size", type=int, help=f"minibatch size (default {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"SGD learning rate (default {d.lr})")
    g.add_argument("--qp", type=int, help=f"encoder qp for weights (default {d.qp})")
    g.add_argument("--nonweight-qp", type=int, help=f"encoder qp for 1-D tensors (default {d.nonweight_qp})")
    g.add_argument("--no-dq", action="store_true", help="uniform instead of dependent quantization")
    g.add_argument("--no-error-feedback", action="store_true",
                   help="do not carry the quantization residual into the next round's update")
    g.add_argument("--variants", help=f"coding variants, the first drives training (default {','.join(d.variants)}; "
                                      "known: tca, notca, tca_hdsp, notca_hdsp)")
    g = p.add_argument_group("fashion-mnist only (the benchmark's options)")
    g.add_argument("--local-steps", type=int, help=f"SGD minibatches per client per round (default {f.local_steps})")
    g.add_argument("--fraction", type=float, help=f"share of each update's entries a message keeps (default {f.fraction})")
    g.add_argument("--train-samples", type=int,
                   help="a seeded subset of the 60,000 training images (default 0: all)")
    g.add_argument("--test-samples", type=int, help="a seeded subset of the 10,000 test images (default 0: all)")
    g.add_argument("--workers", type=int, help=f"client-training processes (default {f.workers}; same result)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _given(args, name):
    value = getattr(args, name)
    return value not in (None, False)


def _pick(args, name, default):
    value = getattr(args, name, None)
    return default if value is None else value


def config_from_args(args):
    from nnr.material.fl import MaterialConfig
    d = _defaults()
    variants = d.variants if args.variants is None else tuple(v.strip() for v in args.variants.split(",") if v.strip())
    return MaterialConfig(clients=_pick(args, "clients", d.clients), rounds=_pick(args, "rounds", d.rounds),
                          seed=_pick(args, "seed", d.seed), hidden=tuple(_pick(args, "hidden", d.hidden)),
                          local_epochs=_pick(args, "local_epochs", d.local_epochs),
                          batch_size=_pick(args, "batch_size", d.batch_size), lr=_pick(args, "lr", d.lr),
                          alpha=_pick(args, "alpha", d.alpha), qp=_pick(args, "qp", d.qp),
                          nonweight_qp=_pick(args, "nonweight_qp", d.nonweight_qp), dq=not args.no_dq,
                          error_feedback=not args.no_error_feedback, variants=variants)


def fashion_config_from_args(args):
    from dataclasses import fields
    from nnr.material.fashion import FashionConfig
    f = FashionConfig()
    return FashionConfig(**{x.name: _pick(args, x.name, getattr(f, x.name)) for x in fields(FashionConfig)})


def canonical_command(cfg) -> str:
    """The command that reproduces the material (options that differ from the defaults, fixed
    order; the output directory written as DIR so the files do not depend on where they went)."""
    d = _defaults()
    parts = ["nnr_make_test_material", f"--clients {cfg.clients}", f"--rounds {cfg.rounds}"]
    for flag, name, fmt in (("--seed", "seed", str), ("--hidden", "hidden", lambda h: ",".join(map(str, h))),
                            ("--local-epochs", "local_epochs", str), ("--batch-size", "batch_size", str),
                            ("--lr", "lr", repr), ("--alpha", "alpha", repr), ("--qp", "qp", str),
                            ("--nonweight-qp", "nonweight_qp", str),
                            ("--variants", "variants", lambda v: ",".join(v))):
        if getattr(cfg, name) != getattr(d, name):
            parts.append(f"{flag} {fmt(getattr(cfg, name))}")
    if not cfg.dq:
        parts.append("--no-dq")
    if not cfg.error_feedback:
        parts.append("--no-error-feedback")
    return " ".join(parts + ["-o DIR"])


def fashion_command(cfg) -> str:
    """canonical_command for --dataset fashion-mnist (--workers left out: it does not change the result)."""
    f = _fashion_defaults()
    parts = ["nnr_make_test_material --dataset fashion-mnist", f"--clients {cfg.clients}", f"--rounds {cfg.rounds}"]
    for flag, name in (("--local-steps", "local_steps"), ("--seed", "seed"), ("--alpha", "alpha"),
                       ("--fraction", "fraction"), ("--train-samples", "train_samples"),
                       ("--test-samples", "test_samples")):
        if getattr(cfg, name) != getattr(f, name):
            parts.append(f"{flag} {getattr(cfg, name)!r}")
    return " ".join(parts + ["-o DIR"])


def _say(quiet, text):
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _round_line(row, primary, clients):
    acc = row["accuracy"]
    if row["round"] == "base":
        return (f"base     acc {acc[primary]:.4f} (uncompressed {acc['uncompressed']:.4f})  "
                f"down {row['bytes'][primary]} B")
    by = row["bytes"][primary]
    others = "  ".join(f"{v} {b['total']} B" for v, b in row["bytes"].items() if v != primary)
    return (f"round {row['round']:<3d}acc {acc[primary]:.4f} (uncompressed {acc['uncompressed']:.4f})  "
            f"up {by['up_total']} B ({clients} clients)  down {by['down']} B  "
            f"{row['ratio_vs_float32'][primary]['total']:.1f}x  {row['bits_per_parameter'][primary]['total']:.2f} bit/param"
            + (f"  | {others}" if others else ""))


def _fashion_line(row, cfg, clock):
    """One progress line; clock holds the time the base row came (the rounds' pace is measured from it)."""
    now = time.monotonic()
    if row["round"] == "base":
        clock["base"] = now
        return f"base         acc {row['accuracy']:.4f}  {row['bytes']} B (uncoded float32)"
    by = row["bytes"]
    done = row["round"] + 1
    left = (now - clock.get("base", now)) / done * (cfg.rounds - done)
    return (f"round {done:>4d}/{cfg.rounds}  acc {row['accuracy']:.4f}  up {by['up_total']} B ({cfg.clients} clients)  "
            f"down {by['down']} B  {row['ratio_vs_float32']['total']:.0f}x  {row['bits_per_parameter']['total']:.3f} "
            f"bit/param  ({row['seconds']:.1f} s; ~{left:.0f} s left)")


def run_verify(directory, quiet):
    from nnr.material.writer import verify
    checked, problems = verify(directory)
    for p in problems:
        print(f"nnr_make_test_material: {p}", file=sys.stderr)
    if problems:
        print(f"nnr_make_test_material: {directory}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    _say(quiet, f"{directory}: {checked} bitstreams decode to the stored checksums")
    return 0


def main(argv=None):
    from nnr.cli.common import run as run_tool
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool("nnr_make_test_material", lambda a: _main(parser, a), args, subject=args.verify or args.output)


def _missing(args):
    """Why the run cannot start (a package or the data set), else None."""
    import importlib.util
    if args.dataset == "digits":
        if importlib.util.find_spec("sklearn") is None:
            return "needs scikit-learn for the digits data set (pip install 'nnr[material]')"
        return None
    if importlib.util.find_spec("torch") is None:
        return "--dataset fashion-mnist needs torch (pip install 'nnr[torch]')"
    from nnr.testenv import fashion_mnist
    if fashion_mnist.find() is None:
        return "--dataset fashion-mnist needs Fashion-MNIST: python -m nnr.testenv.fashion_mnist fetches it"
    return None


def _reference(args):
    """(reference or None, error message or None) for --reference."""
    if not args.reference:
        return None, None
    from nnr.testenv.nncodec import find_reference
    ref, why = find_reference()
    return ref, (None if ref is not None else f"--reference: {why}")


def _main(parser, args):
    if args.verify:
        if args.output:
            parser.error("--verify and -o are exclusive")
        return run_verify(args.verify, args.quiet)
    if not args.output:
        parser.error("-o DIR is required (or --verify DIR)")
    wrong = [n for n, ds in ONLY.items() if ds != args.dataset and _given(args, n)]
    if wrong:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in wrong)}: not an option of --dataset {args.dataset}")
    why = _missing(args)
    ref, ref_error = _reference(args)
    if why or ref_error:
        print(f"nnr_make_test_material: {why or ref_error}", file=sys.stderr)
        return 2
    from nnr.material.fl import MaterialConfigError
    from nnr.material.writer import OutputExistsError, prepare_output_dir
    try:
        cfg = config_from_args(args) if args.dataset == "digits" else fashion_config_from_args(args)
        cfg.validate()
        prepare_output_dir(args.output, args.force)
    except (MaterialConfigError, OutputExistsError) as err:
        print(f"nnr_make_test_material: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"nnr_make_test_material: {args.output}: {err.strerror}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        if args.dataset == "digits":
            written, n_streams, n_files = _digits(cfg, args, ref)
        else:
            written, n_streams, n_files = _fashion(cfg, args, ref)
    except MaterialConfigError as err:          # e.g. no split of the data meets the options
        print(f"nnr_make_test_material: {err}", file=sys.stderr)
        return 2
    t_run = time.monotonic() - t0
    status = run_verify(args.output, True)
    _say(args.quiet, f"wrote {len(written)} files ({n_streams} entries, {n_files} bitstreams) to {args.output} "
                     f"in {t_run:.1f} s; verify: {'ok' if status == 0 else 'FAILED'} "
                     f"({time.monotonic() - t0 - t_run:.1f} s)")
    return status


def _record(ref, quiet):
    """The writers' reference hook: run the reference, record and report what it does not decode."""
    if ref is None:
        return None
    from nnr.material.writer import record_reference

    def hook(manifest, path):
        failed = record_reference(manifest, path, ref)
        n = len(manifest["entries"])
        _say(quiet, f"reference: decodes {n - len(failed)} of {n} entries"
                    + "".join(f"\n  {eid}: {why}" for eid, why in failed.items()))
    return hook


def _digits(cfg, args, ref):
    import nnr
    from nnr.material.fl import run
    from nnr.material.writer import write_material
    command = canonical_command(cfg)
    _say(args.quiet, f"{command}  (variants {', '.join(cfg.variants)}; {cfg.variants[0]} drives training)")
    result = run(cfg, on_round=lambda row: _say(args.quiet, _round_line(row, cfg.variants[0], cfg.clients)))
    written = write_material(args.output, result, command, nnr.__version__, reference=_record(ref, args.quiet))
    return written, len(result.streams), sum(len(s.steps) for s in result.streams)


def _fashion(cfg, args, ref):
    import nnr
    from nnr.material.fashion import run
    from nnr.material.fashion_writer import write_material
    command = fashion_command(cfg)
    _say(args.quiet, f"{command}  (benchmarks.federated's nnr method; {cfg.workers} training processes)")
    clock = {}
    result = run(cfg, on_round=lambda row: _say(args.quiet, _fashion_line(row, cfg, clock)))
    _say(args.quiet, f"training done in {result.seconds:.0f} s; decoding every bitstream for the manifest")
    written = write_material(args.output, result, command, nnr.__version__, reference=_record(ref, args.quiet))
    return written, cfg.clients + 2, 1 + cfg.rounds * (cfg.clients + 1)


if __name__ == "__main__":
    sys.exit(main())
