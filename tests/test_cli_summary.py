"""nnr_encode's summary tells the truth: input bytes at the input's own dtypes, each tensor's
relative error (RMSE / RMS) beside the absolute one, and a warning for every tensor the QP zeroes
or leaves with relative RMSE above the bound (--max-relative-error; tests/test_cli_quality.py
checks the QPs the warnings advise); nnr_decode shows its progress."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.cli import nnr_decode, nnr_encode
from nnr.cli.modes import DEFAULT_BOUND

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encode(capsys, *args):
    status = nnr_encode.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out, err


def summary_bytes(out):
    m = re.search(r"^bytes\s+(\d+) -> (\d+)$", out, re.M)
    return int(m.group(1)), int(m.group(2))


def table(out):
    """{tensor: (qp, max err, rmse, rms, rmse/rms)} from the -v table."""
    lines = out.split("\ntensor ", 1)[1].splitlines()[1:]
    rows = {}
    for line in lines:
        name, _dtype, qp, *numbers = line.split()
        rows[name] = (qp, *map(float, numbers))
    return rows


def relative_rmse(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64).reshape(a.shape)
    return np.sqrt(np.mean((b - a) ** 2)) / np.sqrt(np.mean(a ** 2))


def test_input_bytes_count_each_dtype(tmp_path, capsys):
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32),
               "fc.weight": rng.normal(0, 0.05, (10, 32)).astype(np.float16),
               "proj.weight": rng.normal(0, 0.05, (16, 16)).astype(np.float64),
               "emb.idx": rng.integers(-100, 100, (20,)).astype(np.int64),
               "mask": rng.random((4, 4)) < 0.5,
               "counts": rng.integers(0, 255, (3, 5)).astype(np.uint8)}
    src = tmp_path / "m.npz"
    np.savez(src, **tensors)
    out, _ = encode(capsys, src, "-o", tmp_path / "m.nnr")
    raw, coded = summary_bytes(out)
    assert raw == sum(a.nbytes for a in tensors.values())            # 4 per parameter before
    assert coded == os.path.getsize(tmp_path / "m.nnr")
    assert f"ratio               {raw / coded:.2f}x" in out


def test_input_bytes_of_a_bfloat16_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    state = {"a.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
             "b.weight": torch.randn(16, 8, generator=g).to(torch.float16),
             "c.weight": torch.randn(4, 8, generator=g).to(torch.float64),
             "d.bias": torch.randn(16, generator=g)}
    src = tmp_path / "m.pt"
    torch.save(state, src)
    out, _ = encode(capsys, src, "-o", tmp_path / "m.nnr")
    assert summary_bytes(out)[0] == sum(t.numel() * t.element_size() for t in state.values())


def vgg_like(rng):
    """Layers at very different scales, as in a VGG: at --qp -20 (step 2^-5) 'features.8.weight'
    quantizes to nothing and 'features.6.weight' to a few levels."""
    return {"features.0.weight": rng.normal(0, 0.1, (16, 3, 3, 3)).astype(np.float32),
            "features.0.bias": rng.normal(0, 0.1, (16,)).astype(np.float32),
            "features.3.weight": rng.normal(0, 0.05, (32, 16, 3, 3)).astype(np.float32),
            "features.6.weight": rng.normal(0, 0.009, (32, 32, 3, 3)).astype(np.float32),
            "features.8.weight": rng.normal(0, 0.002, (32, 32, 3, 3)).astype(np.float32),
            "classifier.weight": rng.normal(0, 0.05, (10, 128)).astype(np.float32)}


@pytest.mark.parametrize("dq", [True, False])
def test_warns_of_every_destroyed_tensor(tmp_path, capsys, dq):
    tensors = vgg_like(np.random.default_rng(2))
    src = tmp_path / "vgg.npz"
    np.savez(src, **tensors)
    out_path = tmp_path / "vgg.nnr"
    out, err = encode(capsys, src, "-o", out_path, "--qp", "-20", "-v", *([] if dq else ["--no-dq"]))
    decoded = nnr.decode(out_path.read_bytes())
    zeroed = {n for n, a in tensors.items() if not np.any(decoded[n])}
    lossy = {n for n, a in tensors.items() if relative_rmse(a, decoded[n]) > DEFAULT_BOUND} - zeroed
    assert "features.8.weight" in zeroed and "features.6.weight" in lossy          # the test has teeth
    warned = dict(re.findall(r"^nnr_encode: warning: tensor '([^']+)' (.*)$", err, re.M))
    assert set(warned) == zeroed | lossy and len(err.splitlines()) == len(warned)
    for name in zeroed:
        assert warned[name].startswith("decodes to all zeros at qp -20") and \
            re.search(r"; --qp -\d+ or lower keeps it within relative RMSE 0\.1 \(nnr_encode's default", warned[name])
    for name in lossy:
        assert warned[name].startswith("has relative RMSE") and "at qp -20; --qp -" in warned[name]
    rows = table(out)
    assert list(rows) == list(tensors)
    for name, a in tensors.items():
        qp, max_err, rmse, rms, rel = rows[name]
        b = decoded[name].astype(np.float64).reshape(a.shape)
        assert qp == ("-20" if a.ndim > 1 else "-75")
        assert max_err == pytest.approx(np.abs(b - a).max(), rel=1e-3)
        assert rel == pytest.approx(relative_rmse(a, b), rel=1e-3, abs=1e-9)
        assert rmse == pytest.approx(np.sqrt(np.mean((b - a) ** 2)), rel=1e-3)
    worst = max(tensors, key=lambda n: relative_rmse(tensors[n], decoded[n]))
    assert re.search(rf"^relative error .* worst tensor \S+ \({re.escape(worst)}\)$", out, re.M)


def test_nonweight_tensor_warning_names_its_flag(tmp_path, capsys):
    src = tmp_path / "m.npz"
    rng = np.random.default_rng(4)
    np.savez(src, **{"w": rng.normal(0, 0.1, (16, 16)).astype(np.float32),
                     "b": rng.normal(0, 1e-3, (16,)).astype(np.float32)})
    _, err = encode(capsys, src, "-o", tmp_path / "m.nnr", "--nonweight-qp", "-10", "--qp", "-32")
    assert err.splitlines() == [line for line in err.splitlines() if "'b'" in line] != []
    assert "at qp -10" in err and re.search(r"; --nonweight-qp -\d+ or lower keeps it within relative RMSE", err)


def test_quiet_prints_nothing(tmp_path, capsys):
    src = tmp_path / "vgg.npz"
    np.savez(src, **vgg_like(np.random.default_rng(2)))
    assert encode(capsys, src, "-o", tmp_path / "vgg.nnr", "--qp", "-20", "-q") == ("", "")


def test_healthy_model_has_no_warning_and_no_table(tmp_path, capsys):
    src = tmp_path / "m.npz"
    np.savez(src, w=np.random.default_rng(5).normal(0, 0.1, (32, 32)).astype(np.float32))
    out, err = encode(capsys, src, "-o", tmp_path / "m.nnr")
    assert err == "" and "\ntensor " not in out
    assert re.search(r"^error\s+max \S+  mean \S+  rmse \S+$", out, re.M)
    assert re.search(r"^relative error\s+\S+ \(rmse / rms\); worst tensor \S+ \(w\)$", out, re.M)


def test_onnx_summary_warns_too(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (16, 16)).astype(np.float32), "big"),
             numpy_helper.from_array(rng.normal(0, 0.001, (16, 16)).astype(np.float32), "tiny")]
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("MatMul", ["h", "tiny"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    out, err = encode(capsys, src, "-o", tmp_path / "m.nnr", "--qp", "-20", "-v")
    rms = np.sqrt(np.mean(numpy_helper.to_array(inits[1]).astype(np.float64) ** 2))
    lines = {re.match(r"nnr_encode: warning: tensor '(\w+)' ", x).group(1): x for x in err.splitlines()}
    big = numpy_helper.to_array(inits[0])
    lossy = relative_rmse(big, nnr.decode((tmp_path / "m.nnr").read_bytes())["big"]) > DEFAULT_BOUND
    assert len(lines) == len(err.splitlines()) and set(lines) == {"tiny"} | ({"big"} if lossy else set())
    line = lines["tiny"]
    assert re.fullmatch(f"nnr_encode: warning: tensor 'tiny' decodes to all zeros at qp -20 "
                        f"\\(its RMS is {rms:.3g}\\); --qp -\\d+ or lower keeps it within relative RMSE 0\\.1 "
                        r"\(nnr_encode's default mode gives just this tensor a finer QP\)", line), line
    assert summary_bytes(out) == (os.path.getsize(src), os.path.getsize(tmp_path / "m.nnr"))
    assert set(table(out)) == {"big", "tiny"}


# --- nnr_decode's progress -------------------------------------------------------------------------

def test_decoder_progress_hook_in_unit_order():
    rng = np.random.default_rng(7)
    tensors = {f"t{i}": rng.normal(0, 0.1, (8, 16)).astype(np.float32) for i in range(5)}
    data = nnr.encode(tensors)
    for jobs in (1, 2):
        calls = []
        out = nnr.Decoder(jobs=jobs).decode(data, progress=lambda unit, done: calls.append(
            (unit.index, [t.name for t in done])))
        assert [names for _, names in calls] == [[n] for n in tensors] and list(out) == list(tensors)
        assert [i for i, _ in calls] == sorted(i for i, _ in calls)


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupt_from_the_progress_callback_propagates(jobs):
    """Ctrl-C lands in nnr_decode's progress callback: the KeyboardInterrupt comes out, not a
    'tensor appears twice' from collecting the same unit again."""
    data = nnr.encode({f"t{i}": np.full((4, 4), i, np.float32) for i in range(3)})

    def progress(unit, done):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        nnr.Decoder(jobs=jobs).decode(data, progress=progress)


def test_nnr_decode_progress(tmp_path):
    rng = np.random.default_rng(8)
    src = tmp_path / "m.nnr"
    src.write_bytes(nnr.encode({f"t{i}": rng.normal(0, 0.1, (8, 16)).astype(np.float32) for i in range(3)}))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nnr.cli.nnr_decode", str(src), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    r = run("--progress", "-o", str(tmp_path / "o.npz"))
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert [line.split()[2] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("decoding [") for line in lines) and lines[-1].endswith(" t2")
    assert run("--progress", "-q").stderr == "" and run().stderr == ""      # -q, or not a terminal
