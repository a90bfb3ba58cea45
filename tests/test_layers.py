"""One layer per concern (issue 12): the codec core imports nothing from the API package, decoding
loads neither the encoder nor the rate-distortion tools, and the standard's named values come from
the syntax tables, declared nowhere else."""
import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr_core.syntax import constants, lang

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CYTHON_IMPORT = re.compile(r"^\s*(?:from|c?import)\s+nnr(?:\.|\s|$)", re.M)


def sources(package, exts):
    for folder, _, names in os.walk(os.path.join(ROOT, package)):
        for name in sorted(names):
            if name.endswith(exts):
                yield os.path.join(folder, name)


def imports_nnr(path) -> list:
    """The lines of a source file that import the package nnr (not nnr_core)."""
    text = open(path, encoding="utf-8").read()
    if not path.endswith(".py"):
        return [m.group(0).strip() for m in CYTHON_IMPORT.finditer(text)]
    found = []
    for node in ast.walk(ast.parse(text, path)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [f"line {node.lineno}: {n}" for n in names if n == "nnr" or n.startswith("nnr.")]
    return found


def test_the_scan_sees_an_import_of_nnr(tmp_path):
    """The check below would notice: each form of importing nnr is found, nnr_core's are not."""
    for i, line in enumerate(["import nnr", "from nnr.rd.weighted import x", "import nnr.encoder as e",
                              "def f():\n    from nnr import decoder"]):
        (tmp_path / f"m{i}.py").write_text(line + "\n")
        assert imports_nnr(str(tmp_path / f"m{i}.py")), line
    (tmp_path / "c.pyx").write_text("from nnr.errors cimport X\n")
    assert imports_nnr(str(tmp_path / "c.pyx"))
    (tmp_path / "ok.py").write_text("import nnr_core\nfrom nnr_core.errors import NNRError\n")
    (tmp_path / "ok.pxd").write_text("from nnr_core.cabac._engine cimport CabacCtx\n")
    assert not imports_nnr(str(tmp_path / "ok.py")) and not imports_nnr(str(tmp_path / "ok.pxd"))


def test_core_imports_nothing_from_nnr():
    found = {os.path.relpath(p, ROOT): imports_nnr(p) for p in sources("nnr_core", (".py", ".pyx", ".pxd"))}
    assert len(found) > 30
    assert {p: lines for p, lines in found.items() if lines} == {}


def test_decode_loads_neither_the_encoder_nor_rd(tmp_path):
    """A fresh interpreter that imports nnr and decodes (with a trace, threads, several tensors)
    never loads nnr.encoder, any nnr.rd module or the core's encoder package."""
    rng = np.random.default_rng(0)
    stream = tmp_path / "m.nnr"
    stream.write_bytes(nnr.encode({"w": rng.normal(0, 0.1, (70, 9)).astype(np.float32),
                                   "i": np.arange(12, dtype=np.int32)}, scan_order=1))
    code = ("import sys, nnr\n"
            "from nnr_core.bitstream.trace import Trace\n"
            f"data = open({str(stream)!r}, 'rb').read()\n"
            "out = nnr.decode(data, jobs=2)\n"
            "nnr.Decoder().decode(data, trace=Trace())\n"
            "assert sorted(out) == ['i', 'w']\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('nnr.', 'nnr_core.')))))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split()
    assert "nnr.decoder" in loaded and "nnr_core.cabac" in loaded          # it did decode
    unwanted = [m for m in loaded if m == "nnr.encoder" or m == "nnr.rd" or m.startswith("nnr.rd.")
                or m == "nnr_core.encoder" or m.startswith("nnr_core.encoder.")]
    assert unwanted == []


def test_constants_are_the_tables():
    """Every const of the syntax tables is exposed by nnr_core.syntax.constants with its value, and
    the module exposes no named value the tables do not define."""
    tables = lang.load_tables().constants
    exposed = {n: getattr(constants, n) for n in dir(constants) if re.fullmatch(r"NNR_[A-Z0-9_]+", n)}
    assert exposed == tables
    assert constants.UNIT_TYPE_NAMES[tables["NNR_NDU"]] == "NNR_NDU"
    assert constants.PAYLOAD_TYPE_NAMES[tables["NNR_PT_BLOCK"]] == "NNR_PT_BLOCK"


_NAME = "(?:" + "|".join(sorted(lang.load_tables().constants, key=len, reverse=True)) + ")"
REDECLARED = re.compile(rf"^\s*{_NAME}(?:\s*,\s*{_NAME})*\s*=\s*(?:-?\d|range\()", re.M)


@pytest.mark.parametrize("package", ["nnr", "nnr_core", "tests", "benchmarks", "examples"])
def test_no_module_declares_the_constants_again(package):
    """Unit types, payload types and topology formats are taken from nnr_core.syntax.constants,
    never written out as numbers again."""
    assert REDECLARED.search("NNR_STR, NNR_NDU = 0, 5\n") and REDECLARED.search("NNR_TPL = 3\n")
    found = {os.path.relpath(p, ROOT): REDECLARED.findall(open(p, encoding="utf-8").read())
             for p in sources(package, (".py",))}
    assert {p: lines for p, lines in found.items() if lines} == {}


def test_state_is_switched_by_documented_options():
    """Decoder(keep_state=...) and Encoder(stateful=...) are what nnr.decode / nnr.encode use."""
    rng = np.random.default_rng(4)
    base = {"w": rng.normal(0, 0.1, (16, 8)).astype(np.float32)}
    update = {"w": (rng.normal(0, 0.01, (16, 8)) * (rng.random((16, 8)) < 0.5)).astype(np.float32)}
    enc = nnr.Encoder()
    streams = [enc.encode(base), enc.encode(update)]
    assert "w" in enc.state.tensors and enc.stateful
    keeping, forgetting = nnr.Decoder(), nnr.Decoder(keep_state=False)
    for dec in (keeping, forgetting):
        dec.decode(streams[0])
    assert keeping.tensors[0].levels is not None and forgetting.tensors[0].levels is None
    assert "w" in keeping.state.tensors and forgetting.state.tensors == {}
    keeping.decode(streams[1])                                   # TCA needs the kept reference
    with pytest.raises(nnr.ConstraintViolationError, match="temporal_context_modeling_flag"):
        forgetting.decode(streams[1])
    stateless = nnr.Encoder(stateful=False)
    first = stateless.encode(base, incremental=False)
    assert stateless.state.tensors == {}
    assert stateless.encode(base, incremental=False) == first == nnr.encode(base)
    assert nnr.Encoder().encode(base, incremental=False) != first          # a stateful one counts depths
    with pytest.raises(nnr.EncoderConfigError, match="stateful"):
        nnr.encode(base, stateful=True)
