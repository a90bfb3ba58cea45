"""Worker threads of the encoder and the decoder (their `jobs` option)."""
import os

import numpy as np

from nnr.errors import EncoderConfigError


def resolve_jobs(jobs):
    """Worker threads: None or 0 = all cores; otherwise a positive integer."""
    if jobs is None or jobs == 0:
        return max(1, os.cpu_count() or 1)
    if not isinstance(jobs, (int, np.integer)) or isinstance(jobs, bool) or jobs < 0:
        raise EncoderConfigError(f"jobs must be a positive integer (0 or None: all cores), not {jobs!r}")
    return int(jobs)
