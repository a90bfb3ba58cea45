"""nnr_rd: rate-distortion report of a model (see nnr/rd/cli.py)."""
import sys

from nnr.rd.cli import main

if __name__ == "__main__":
    sys.exit(main())
