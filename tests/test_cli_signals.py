"""Ctrl-C and SIGTERM stop the tools with one line ("PROG: interrupted" / "PROG: terminated"),
exit status 130 / 143, no traceback, and nothing left behind: no output, no temporary file.

Each test waits until the tool is really working before it signals: nnr_encode creates its
output's temporary file before it reads the model; nnr_decode --progress prints a line per tensor."""
import glob
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nnr
from nnr.cli import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT = 120           # seconds a tool may take to start working on a loaded machine


def _default_sigint():
    # a shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: the tool gets Ctrl-C's default disposition, as it has in a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tool, *args):
    return subprocess.Popen([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def finish(proc):
    try:
        _, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def wait_for(predicate, proc, what):
    deadline = time.monotonic() + WAIT
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the tool ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT} s")
        time.sleep(0.01)


def big_npz(path, count=8, shape=(512, 1024)):
    rng = np.random.default_rng(0)
    np.savez(path, **{f"l{i}.weight": rng.normal(0, 0.05, shape).astype(np.float32) for i in range(count)})


def big_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (1024, 1024)).astype(np.float32), f"w{i}")
             for i in range(4)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"]) for i in range(4)]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("h3", TensorProto.FLOAT, [1, 1024])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("fmt", ["npz", "onnx"])
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, common.EXIT_INTERRUPTED, "interrupted"),
                                               (signal.SIGTERM, common.EXIT_TERMINATED, "terminated")])
def test_encode_signal_leaves_nothing(tmp_path, fmt, sig, status, word):
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = src_dir / f"big.{fmt}"
    big_npz(src) if fmt == "npz" else big_onnx(src)
    out = out_dir / "big.nnr"
    proc = start("nnr_encode", src, "-o", out, "-j", "1")
    wait_for(lambda: glob.glob(str(out_dir / ".nnr-*")), proc, "temporary output file")
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == status and err == f"nnr_encode: {word}\n"
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, common.EXIT_INTERRUPTED, "interrupted"),
                                               (signal.SIGTERM, common.EXIT_TERMINATED, "terminated")])
def test_decode_signal_leaves_nothing(tmp_path, sig, status, word):
    rng = np.random.default_rng(1)
    tensors = {f"l{i}.weight": rng.normal(0, 0.05, (256, 512)).astype(np.float32) for i in range(24)}
    src = tmp_path / "big.nnr"
    src.write_bytes(nnr.encode(tensors, jobs=2))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = start("nnr_decode", src, "-o", out_dir / "big.npz", "-j", "1", "--progress")
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    first = lines.get(timeout=WAIT)          # the first tensor is decoded: the tool is at work
    assert first.startswith("decoding [")
    proc.send_signal(sig)
    proc.wait(timeout=WAIT)
    rest = []
    while True:
        try:
            rest.append(lines.get(timeout=5))
        except queue.Empty:
            break
    assert proc.returncode == status, rest
    assert "Traceback" not in "".join(rest) and rest[-1] == f"nnr_decode: {word}\n"
    assert all(line.startswith("decoding [") for line in rest[:-1]) and len(rest) < len(tensors)
    assert os.listdir(out_dir) == []
