"""nnr_conformance: run a conformance suite through a decoder, report syntax coverage, regenerate
the streams nnr writes.

    nnr_conformance run [SUITE] [--decoder nnr|nnr_decode|nncodec|CMD] [--report md|junit|json] [-o FILE]
    nnr_conformance coverage [SUITE] [--report text|md]
    nnr_conformance generate [SUITE] [--check] [--no-reference]
"""
import argparse
import os
import sys

from nnr.conformance.manifest import ManifestError, load_manifest

DEFAULT_SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bitstreams")


def _suite(path):
    return path or (DEFAULT_SUITE if os.path.isdir(DEFAULT_SUITE) else "bitstreams")


def build_parser():
    p = argparse.ArgumentParser(prog="nnr_conformance", description="NNR/NNC conformance suite tools (ISO/IEC 15938-17)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run every entry of a suite through a decoder")
    r.add_argument("suite", nargs="?", help="suite folder or manifest.json (default: bitstreams/)")
    r.add_argument("--decoder", default="nnr",
                   help="nnr (in-process), nnr_decode (CLI), nncodec (the reference in its venv) or a command "
                        "template with {input} and {output} (an .npz the command writes)")
    r.add_argument("--report", choices=["md", "junit", "json"], default="md")
    r.add_argument("-o", "--output", help="write the report to FILE (the summary still goes to stderr)")
    r.add_argument("-k", "--select", action="append", help="only entries whose id matches this glob (repeatable)")
    r.add_argument("--feature", action="append", help="only entries with this feature (repeatable)")
    r.add_argument("--all", action="store_true",
                   help="with --decoder nncodec: also run entries whose reference_decodes is not true")
    r.add_argument("--failures-only", action="store_true", help="md report: list only FAIL and ERROR rows")
    c = sub.add_parser("coverage", help="which syntax elements, branches and values the suite exercises")
    c.add_argument("suite", nargs="?")
    c.add_argument("--report", choices=["text", "md"], default="text")
    g = sub.add_parser("generate", help="regenerate the streams nnr writes and the manifest")
    g.add_argument("suite", nargs="?")
    g.add_argument("--check", action="store_true", help="compare with a fresh generation; write nothing")
    g.add_argument("--no-reference", action="store_true",
                   help="do not run the reference decoder; keep the committed reference_decodes values")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    suite = _suite(args.suite)
    try:
        if args.command == "run":
            return _run(args, suite)
        if args.command == "coverage":
            return _coverage(args, suite)
        return _generate(args, suite)
    except ManifestError as err:
        print(f"nnr_conformance: {err}", file=sys.stderr)
        return 2


def _run(args, suite):
    from nnr.conformance.report import FORMATS, markdown
    from nnr.conformance.runner import run_suite
    try:
        report = run_suite(suite, args.decoder, args.select, args.feature, args.all)
    except (RuntimeError, ValueError) as err:
        print(f"nnr_conformance: {err}", file=sys.stderr)
        return 2
    text = markdown(report, verbose=not args.failures_only) if args.report == "md" else FORMATS[args.report](report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    c = report.counts
    print(f"nnr_conformance: {report.decoder}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v) +
          f" ({len(report.results)} entries, {report.seconds:.1f} s)", file=sys.stderr)
    return 0 if report.ok else 1


def _coverage(args, suite):
    from nnr.conformance import coverage
    manifest, root = load_manifest(suite)
    cov = coverage.measure(manifest, root)
    sys.stdout.write(coverage.markdown(cov) if args.report == "md" else coverage.text_summary(cov))
    return 1 if cov.missing_elements else 0


def _generate(args, suite):
    from nnr.conformance import generate
    root = suite if os.path.isdir(suite) else os.path.dirname(os.path.abspath(suite))
    if args.check:
        diffs = generate.check(root)
        for d in diffs:
            print(d)
        print(f"nnr_conformance: generate --check: {'OK' if not diffs else f'{len(diffs)} difference(s)'}",
              file=sys.stderr)
        return 1 if diffs else 0
    manifest = generate.generate(root, reference=not args.no_reference,
                                 log=lambda m: print(f"nnr_conformance: {m}", file=sys.stderr))
    print(f"nnr_conformance: wrote {len(manifest['entries'])} entries to {root}/manifest.json", file=sys.stderr)
    return 0
