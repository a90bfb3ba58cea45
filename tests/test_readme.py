"""Every command block of the README runs as written (```sh and ```python blocks; ```text blocks are
synopses). `pip install` lines are not run: the test environment has what they install, which the
test checks instead; `python -m nnr.testenv...` lines run, and are no-ops when the item is there."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import pytest

from nnr.testenv import fashion_mnist
from nnr.testenv.nncodec import find_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
TEST_COMMAND_SECTION = "(top)"


def blocks():
    """[(section, language, [lines])] for every fenced block of the README, in order."""
    with open(README) as f:
        text = f.read()
    out, section = [], TEST_COMMAND_SECTION
    for part in re.split(r"(?m)^(## .*)$", text):
        if part.startswith("## "):
            section = part[3:].strip()
            continue
        for lang, body in re.findall(r"(?ms)^```(\w+)\n(.*?)^```", part):
            out.append((section, lang, [ln for ln in body.splitlines() if ln.strip()]))
    return out


def section_blocks(section, lang="sh"):
    return [lines for s, lg, lines in blocks() if s == section and lg == lang]


def _extras_requirements():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def check_pip_line(line):
    """A `pip install -e ".[a,b]"` line names extras the project has, and their packages are here."""
    extras = _extras_requirements()
    m = re.fullmatch(r'pip install -e "?\.(?:\[([\w,]+)\])?"?', line.split("#")[0].strip().split(" && ")[0])
    assert m, f"README pip line not of the form pip install -e \".[extras]\": {line!r}"
    for extra in filter(None, (m.group(1) or "").split(",")):
        assert extra in extras, f"README names extra {extra!r}, pyproject has {sorted(extras)}"
        for req in extras[extra]:
            module = {"scikit-learn": "sklearn"}.get(re.split(r"[<>=\[ ]", req)[0], re.split(r"[<>=\[ ]", req)[0])
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"README line {line!r} installs {module}, which is not installed here")


def run_block(lines, cwd, env_extra=None, timeout=900):
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), MPLBACKEND="Agg",
               FLWR_TELEMETRY_ENABLED="0", **(env_extra or {}))
    outputs = []
    for line in lines:
        command = line.split("  #")[0].strip()
        if command.startswith("pip install"):
            check_pip_line(command)
            rest = command.split(" && ", 1)
            if len(rest) == 1:
                continue
            command = rest[1]
        command = re.sub(r"(^|&& )python ", rf"\g<1>{sys.executable} ", command)
        r = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, f"{command!r} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        outputs.append(r.stdout)
    return outputs


def _need_torch():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the block makes its model with torch (python -m nnr.testenv installs it)")


def test_every_block_is_known():
    """A new block gets a test here (or is a ```text synopsis)."""
    known = {(TEST_COMMAND_SECTION, "sh"), ("Using the codec", "python"), ("Conformance", "sh"),
             ("Compressing a model", "sh"), ("Compressing a model", "python"), ("Generating test material", "sh"),
             ("Federated learning", "sh"), ("Tools", "text")}
    found = [(s, lang) for s, lang, _ in blocks()]
    assert set(found) <= known, f"README blocks without a test: {set(found) - known}"
    assert found.count(("Compressing a model", "sh")) == 2
    assert found.count(("Generating test material", "sh")) == 2


def test_first_commands(tmp_path):
    demo, tests = section_blocks(TEST_COMMAND_SECTION)[0]
    out = run_block([demo], tmp_path)[0]
    assert "compression ratio" in out and "same bytes as the reference (NNCodec 2.1.3): yes" in out
    # the test command itself is what CI runs (.ci/run extracts it from here): check its parts
    assert tests.startswith('pip install -e ".[test]" && python -m nnr.testenv && python -m pytest')
    check_pip_line(tests)


def test_using_the_codec_block_runs():
    (code,) = section_blocks("Using the codec", "python")
    namespace = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)
    assert set(namespace["tensors"]) == {"fc.weight", "fc.bias"}
    assert namespace["update1_decoded"]["fc.weight"].shape == namespace["w"].shape


def test_compressing_a_model_blocks_run(tmp_path):
    _need_torch()
    pytest.importorskip("onnx", reason="the ONNX block needs onnx (pip install -e \".[onnx]\")")
    torch_block, onnx_block = section_blocks("Compressing a model")
    run_block(torch_block, tmp_path)
    assert (tmp_path / "model.nnr").stat().st_size > 0
    assert (tmp_path / "restored.pt").exists()
    assert (tmp_path / "rd.md").read_text().count("|") > 20 and (tmp_path / "rd.csv").exists()
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    run_block(onnx_block, onnx_dir)
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import numpy_helper
    weights = [{t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_dir / name)).graph.initializer}
               for name in ("model.onnx", "restored.onnx")]
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) == 4
    for name, w in weights[0].items():
        # weights at qp -32 (step 2^-8; the trellis reaches about 1.6 steps), biases at -75
        step = 2.0 ** -8 if w.ndim > 1 else 2.0 ** (-75 / 4)
        assert np.abs(weights[1][name] - w).max() <= 2 * step, name
    x = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_dir / "restored.onnx"))
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)


def nnr_decode(data):
    import nnr
    return nnr.decode(data)


def test_importance_block_runs():
    _need_torch()
    code = section_blocks("Compressing a model", "python")[0]
    namespace = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)
    assert set(namespace["imp"]) == set(namespace["weights"]) == set(namespace["decoded"])


def test_rate_budget_block_runs(capsys):
    code = section_blocks("Compressing a model", "python")[1]
    namespace = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    size, budget = int(printed[0].split()[0]), int(printed[0].split()[-3])
    assert 0.995 * budget <= size <= budget == int(2.0 * 35328 / 8)
    assert namespace["value"] >= 20.0 and namespace["snr_db"](nnr_decode(namespace["data"])) == namespace["value"]


def test_output_aware_rounding_block_runs():
    _need_torch()
    assert len(section_blocks("Compressing a model", "python")) == 3
    code = section_blocks("Compressing a model", "python")[2]
    namespace = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)
    tensors, data = namespace["tensors"], namespace["data"]
    params = sum(v.size for v in tensors.values())
    assert 0.98 * 4.0 * params / 8 <= len(data) <= 4.0 * params / 8
    import nnr
    dec = nnr.Decoder()
    assert set(dec.decode(data)) == set(tensors)
    dq = {u.fields["topology_elem_id"]: u.fields["dq_flag"] for u in dec.units if "dq_flag" in u.fields}
    assert dq == {"0.weight": 0, "0.bias": 1, "3.weight": 0, "3.bias": 1}     # the rounded layers: no trellis


def test_conformance_block_runs():
    ref, why = find_reference()
    if ref is None:
        pytest.skip(f"the block runs the reference: {why}")
    (lines,) = section_blocks("Conformance")
    outputs = run_block(lines, REPO)
    assert "PASS" in outputs[0] and "PASS" in outputs[2]


def test_generating_test_material_block_runs(tmp_path):
    lines = section_blocks("Generating test material")[0]
    run_block(lines, tmp_path)
    assert (tmp_path / "material" / "manifest.json").exists()


def test_generating_fashion_mnist_material_block_runs(tmp_path):
    _need_torch()
    if fashion_mnist.find() is None:
        pytest.skip("Fashion-MNIST not found (python -m nnr.testenv.fashion_mnist fetches it)")
    lines = section_blocks("Generating test material")[1]
    run_block(lines, tmp_path)                  # the last line, --verify, exits 1 on a mismatch
    with open(tmp_path / "fl-material" / "manifest.json") as f:
        material = json.load(f)["material"]
    assert len(material["rounds"]) == 10 and material["config"]["clients"] == 4


def test_federated_learning_block_runs(tmp_path):
    _need_torch()
    for module in ("flwr", "ray"):
        pytest.importorskip(module, reason=f"the Flower example needs {module}")
    if fashion_mnist.find() is None:
        pytest.skip("Fashion-MNIST not found (python -m nnr.testenv.fashion_mnist fetches it)")
    record = os.path.join(REPO, "examples", "flower_fashion_mnist.md")
    before = os.stat(record).st_mtime_ns
    (lines,) = section_blocks("Federated learning")
    # the example runs from the repository, as the README's relative path says; its table goes to
    # the system's temporary folder (not TMPDIR=tmp_path: Ray's socket paths would grow too long)
    out = run_block(lines, REPO)[-1]
    table = re.search(r"^table written to (.*)$", out, re.M).group(1)
    assert table.startswith(tempfile.gettempdir()) and "| **all** |" in open(table).read()
    assert os.stat(record).st_mtime_ns == before, "the example rewrote the tracked table"
