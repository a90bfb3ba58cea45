"""Discovery of the bundled reference vectors (bitstreams/nncodec-*/<case>/)."""
import os
import re
from dataclasses import dataclass

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")
SETS = ("nncodec-2.1.3", "nncodec-1.x", "nncodec-1.x-codebook1")


@dataclass
class Step:
    bitstream: bytes
    decoded: dict          # name -> array (single-tensor cases use the name None)
    levels: dict


@dataclass
class Case:
    set_name: str
    name: str
    path: str
    steps: list

    @property
    def id(self):
        return f"{self.set_name}/{self.name}"


def _load_arrays(path_npy, path_npz):
    if os.path.exists(path_npz):
        with np.load(path_npz) as z:
            return {k: z[k] for k in z.files}
    if os.path.exists(path_npy):
        return {None: np.load(path_npy)}
    return {}


def _load_levels(path):
    if not os.path.exists(path):
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_cases(set_name):
    base = os.path.join(ROOT, set_name)
    cases = []
    if not os.path.isdir(base):
        return cases
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if not os.path.isdir(path):
            continue
        files = os.listdir(path)
        step_ids = sorted({int(m.group(1)) for f in files for m in [re.match(r"step(\d+)_bitstream\.nnc$", f)] if m})
        steps = []
        if step_ids:
            for k in step_ids:
                p = os.path.join(path, f"step{k}_")
                with open(p + "bitstream.nnc", "rb") as f:
                    steps.append(Step(f.read(), _load_arrays(p + "decoded.npy", p + "decoded.npz"),
                                      _load_levels(p + "levels.npz")))
        elif "bitstream.nnc" in files:
            with open(os.path.join(path, "bitstream.nnc"), "rb") as f:
                bs = f.read()
            steps.append(Step(bs, _load_arrays(os.path.join(path, "decoded.npy"), os.path.join(path, "decoded.npz")),
                              _load_levels(os.path.join(path, "levels.npz"))))
        if steps:
            cases.append(Case(set_name, name, path, steps))
    return cases


def expected_by_name(step, decoded: dict) -> dict:
    """Map the reference's decoded arrays onto our output names (single-tensor files have no name)."""
    if list(step.decoded) == [None]:
        assert len(decoded) == 1, f"expected one tensor, got {list(decoded)}"
        return {next(iter(decoded)): step.decoded[None]}
    return step.decoded
