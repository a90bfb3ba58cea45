"""nnr_conformance: conformance suite runner, coverage and generator (see nnr/conformance/cli.py)."""
import sys

from nnr.conformance.cli import main

if __name__ == "__main__":
    sys.exit(main())
