"""nnr_make_test_material: incremental NNC test material (base + update bitstreams with checksums)
from a simulated federated training run; `--verify DIR` checks existing material."""
import argparse
import sys
import time


def _defaults():
    from nnr.material.fl import MaterialConfig
    return MaterialConfig()


def _int_list(text):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one width")
    return values


def build_parser():
    d = _defaults()
    p = argparse.ArgumentParser(
        prog="nnr_make_test_material",
        description="Train a small numpy MLP on scikit-learn's digits with simulated FedAvg (N non-IID clients, "
                    "R rounds), code every client update and every global-model update as NNC incremental "
                    "bitstreams (TCA on / off, HDSP) and write them with checksums and per-round metrics in "
                    "the conformance suite's layout.")
    p.add_argument("-o", "--output", metavar="DIR", help="output directory (created; must be empty unless --force)")
    p.add_argument("--verify", metavar="DIR", help="decode every sequence of existing material in DIR and compare "
                                                   "the checksums; exit status 1 on a mismatch")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR (earlier material there is replaced)")
    p.add_argument("--clients", type=int, default=d.clients, help=f"number of clients (default {d.clients})")
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"number of FedAvg rounds (default {d.rounds})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"master seed (default {d.seed})")
    p.add_argument("--hidden", type=_int_list, default=d.hidden,
                   help=f"hidden layer widths, comma-separated (default {','.join(map(str, d.hidden))})")
    p.add_argument("--local-epochs", type=int, default=d.local_epochs, help=f"local epochs per round (default {d.local_epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"minibatch size (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"SGD learning rate (default {d.lr})")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help=f"Dirichlet concentration of the label split, smaller = less IID (default {d.alpha})")
    p.add_argument("--qp", type=int, default=d.qp, help=f"encoder qp for weights (default {d.qp})")
    p.add_argument("--nonweight-qp", type=int, default=d.nonweight_qp,
                   help=f"encoder qp for 1-D tensors (default {d.nonweight_qp})")
    p.add_argument("--no-dq", action="store_true", help="uniform instead of dependent quantization")
    p.add_argument("--no-error-feedback", action="store_true",
                   help="do not carry the quantization residual into the next round's update")
    p.add_argument("--variants", default=",".join(d.variants),
                   help=f"coding variants, the first drives training (default {','.join(d.variants)}; "
                        "known: tca, notca, tca_hdsp, notca_hdsp)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def config_from_args(args):
    from nnr.material.fl import MaterialConfig
    return MaterialConfig(clients=args.clients, rounds=args.rounds, seed=args.seed, hidden=tuple(args.hidden),
                          local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha,
                          qp=args.qp, nonweight_qp=args.nonweight_qp, dq=not args.no_dq,
                          error_feedback=not args.no_error_feedback,
                          variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()))


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


def _main(parser, args):
    if args.verify:
        if args.output:
            parser.error("--verify and -o are exclusive")
        return run_verify(args.verify, args.quiet)
    if not args.output:
        parser.error("-o DIR is required (or --verify DIR)")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("nnr_make_test_material: needs scikit-learn for the digits data set (pip install 'nnr[material]')",
              file=sys.stderr)
        return 2
    import nnr
    from nnr.material.fl import MaterialConfigError, run
    from nnr.material.writer import OutputExistsError, prepare_output_dir, write_material

    try:
        cfg = config_from_args(args)
        cfg.validate()
        prepare_output_dir(args.output, args.force)
    except (MaterialConfigError, OutputExistsError) as err:
        print(f"nnr_make_test_material: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"nnr_make_test_material: {args.output}: {err.strerror}", file=sys.stderr)
        return 2
    command = canonical_command(cfg)
    t0 = time.monotonic()
    _say(args.quiet, f"{command}  (variants {', '.join(cfg.variants)}; {cfg.variants[0]} drives training)")
    try:
        result = run(cfg, on_round=lambda row: _say(args.quiet, _round_line(row, cfg.variants[0], cfg.clients)))
    except MaterialConfigError as err:
        print(f"nnr_make_test_material: {err}", file=sys.stderr)
        return 2
    written = write_material(args.output, result, command, nnr.__version__)
    t_run = time.monotonic() - t0
    status = run_verify(args.output, True)
    n_streams = len(result.streams)
    n_files = sum(len(s.steps) for s in result.streams)
    _say(args.quiet, f"wrote {len(written)} files ({n_streams} sequences, {n_files} bitstreams) to {args.output} "
                     f"in {t_run:.1f} s; verify: {'ok' if status == 0 else 'FAILED'} "
                     f"({time.monotonic() - t0 - t_run:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
