"""The command-line tools' failures: one line on stderr naming the file, never a traceback, and the
exit statuses of nnr/cli/common.py (1 input, 2 usage or output, 130 interrupted, 143 terminated)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.cli import common, nnr_decode, nnr_encode, nnr_info
from nnr.rd import cli as nnr_rd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = {"nnr_encode": nnr_encode.main, "nnr_decode": nnr_decode.main, "nnr_info": nnr_info.main,
         "nnr_rd": nnr_rd.main}


def call(capsys, tool, *args):
    """(exit status, stdout, stderr) of a tool run in this process."""
    status = TOOLS[tool]([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def run(tool, *args, **kw):
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, **kw)


def one_line(err, prog):
    """stderr is exactly one line from `prog`, without a traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), err
    return lines[0]


def model(tmp_path, name="m.npz"):
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.savez(path, **{"a.weight": rng.normal(0, 0.05, (16, 8)).astype(np.float32),
                      "a.bias": rng.normal(0, 0.05, (16,)).astype(np.float32)})
    return path


def bitstream(tmp_path):
    path = tmp_path / "m.nnr"
    path.write_bytes(nnr.encode({"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)}))
    return path


# --- output checks, made before the input is read ------------------------------------------------

@pytest.mark.parametrize("tool", ["nnr_encode", "nnr_decode"])
def test_output_in_a_missing_folder(tmp_path, capsys, tool):
    garbage = tmp_path / ("text.pt" if tool == "nnr_encode" else "text.nnr")
    garbage.write_text("hello\n")
    status, _, err = call(capsys, tool, garbage, "-o", tmp_path / "nodir" / "x.npz")
    line = one_line(err, tool)
    # the output is refused, not the (bad) input: it was checked first
    assert status == common.EXIT_USAGE and "nodir" in line and "does not exist" in line


@pytest.mark.parametrize("tool", ["nnr_encode", "nnr_decode"])
def test_output_is_a_directory(tmp_path, capsys, tool):
    src = model(tmp_path) if tool == "nnr_encode" else bitstream(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    status, _, err = call(capsys, tool, src, "-o", target)
    assert status == common.EXIT_USAGE and "is a directory" in one_line(err, tool)
    assert target.is_dir() and list(target.iterdir()) == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".nnr-")]


def test_trace_in_a_missing_folder(tmp_path, capsys):
    status, _, err = call(capsys, "nnr_decode", bitstream(tmp_path), "--trace", tmp_path / "no" / "t.txt")
    assert status == common.EXIT_USAGE and "--trace" not in err and "does not exist" in one_line(err, "nnr_decode")


def test_decode_unknown_output_extension_refused_before_decoding(tmp_path, capsys):
    garbage = tmp_path / "text.nnr"
    garbage.write_text("hello\n")
    status, _, err = call(capsys, "nnr_decode", garbage, "-o", tmp_path / "out.xyz")
    line = one_line(err, "nnr_decode")
    assert status == common.EXIT_USAGE and "--format" in line and "'.xyz'" in line
    src = bitstream(tmp_path)
    assert call(capsys, "nnr_decode", src, "-o", tmp_path / "out.xyz", "--format", "npz", "-q")[0] == 0
    with np.load(tmp_path / "out.xyz") as z:
        assert np.array_equal(z["w"], nnr.decode(src.read_bytes())["w"])
    status, _, err = call(capsys, "nnr_decode", src, "-o", tmp_path / "o.npz", "--format", "zip")
    assert status == common.EXIT_USAGE and "unknown --format 'zip'" in one_line(err, "nnr_decode")


def test_encode_unknown_input_extension(tmp_path, capsys):
    src = tmp_path / "m.weights"
    src.write_bytes(model(tmp_path).read_bytes())
    status, _, err = call(capsys, "nnr_encode", src, "-o", tmp_path / "m.nnr")
    assert status == common.EXIT_USAGE and "--format" in one_line(err, "nnr_encode")
    assert call(capsys, "nnr_encode", src, "--format", "npz", "-o", tmp_path / "m.nnr", "-q")[0] == 0


def test_option_values_are_usage_errors_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        nnr_encode.main([str(model(tmp_path)), "-o", str(tmp_path / "x.nnr"), "--qp-density", "9"])
    assert ei.value.code == common.EXIT_USAGE and "--qp-density: must be 0..7, not 9" in capsys.readouterr().err
    assert not (tmp_path / "x.nnr").exists()


# --- input errors: one exit status for a missing, unreadable or garbage input -------------------

GARBAGE = [("text.pt", b"hello\n"), ("empty.pt", b""), ("empty.npz", b""), ("text.npz", b"hello\n"),
           ("text.safetensors", b"hello\n"), ("text.h5", b"hello\n"), ("missing.npz", None)]


@pytest.mark.parametrize("name, content", GARBAGE)
def test_encode_bad_input_is_one_line(tmp_path, name, content):
    if name.endswith(".pt"):
        pytest.importorskip("torch")
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "x.nnr"
    r = run("nnr_encode", src, "-o", out)
    line = one_line(r.stderr, "nnr_encode")
    assert r.returncode == common.EXIT_FAILED and name in line
    if content == b"":
        assert "empty file; expected" in line
    assert sorted(os.listdir(tmp_path)) == ([name] if content is not None else [])


@pytest.mark.parametrize("tool", ["nnr_decode", "nnr_info"])
@pytest.mark.parametrize("content, says", [(None, "no such file"), (b"", "empty file; expected an NNC bitstream"),
                                           (b"hello, world\n", "not an NNC bitstream"),
                                           (bytes([0, 4, 5 << 2, 0]), "not an NNC bitstream")])
def test_decode_and_info_bad_input(tmp_path, capsys, tool, content, says):
    src = tmp_path / "in.nnr"
    if content is not None:
        src.write_bytes(content)
    status, out, err = call(capsys, tool, src)
    line = one_line(err, tool)
    assert status == common.EXIT_FAILED and says in line and str(src) in line and out == ""


def test_missing_and_garbage_input_share_the_exit_status(tmp_path, capsys):
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"hello")
    for tool, out in (("nnr_encode", "x.nnr"), ("nnr_decode", "x.npz")):
        missing = call(capsys, tool, tmp_path / "missing.npz", "-o", tmp_path / out)[0]
        bad = call(capsys, tool, garbage, "-o", tmp_path / out)[0]
        assert missing == bad == common.EXIT_FAILED


def test_pickled_module_message_names_the_flag(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    src = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(4, 3), src)
    status, _, err = call(capsys, "nnr_encode", src, "-o", tmp_path / "x.nnr")
    line = one_line(err, "nnr_encode")
    assert status == common.EXIT_FAILED and "Pass --allow-pickle only if you trust" in line
    assert "allow_pickle" not in line
    assert call(capsys, "nnr_encode", src, "-o", tmp_path / "x.nnr", "--allow-pickle", "-q")[0] == 0
    from nnr.errors import EncoderConfigError
    from nnr.modelio import load_model
    with pytest.raises(EncoderConfigError, match=r"Pass allow_pickle=True only if you trust"):
        load_model(src)                 # the Python API's message names the keyword


def test_external_hdf5_message_names_the_flag(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    (tmp_path / "data.bin").write_bytes(bytes(range(16)))
    src = tmp_path / "ext.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("w", shape=(16,), dtype="u1", external=[(str(tmp_path / "data.bin"), 0, 16)])
    status, _, err = call(capsys, "nnr_encode", src, "-o", tmp_path / "x.nnr")
    line = one_line(err, "nnr_encode")
    assert status == common.EXIT_FAILED and line.endswith("nnr reads only with --allow-external")
    assert call(capsys, "nnr_encode", src, "-o", tmp_path / "x.nnr", "--allow-external", "-q")[0] == 0
    assert nnr.decode((tmp_path / "x.nnr").read_bytes())["w"].tolist() == list(range(16))


def test_float64_message_keeps_the_keyword_for_the_api():
    from nnr.errors import EncoderConfigError
    from nnr.modelio.dtypes import to_codec
    with pytest.raises(EncoderConfigError, match=r"Pass allow_float64=True to code it") as ei:
        to_codec("w", np.zeros(3))
    assert ei.value.option == "allow_float64"
    assert "allow_float64=True" in common.describe(ei.value)      # the CLIs have no flag for it


def test_verify_mismatch_writes_nothing(tmp_path, capsys):
    src = bitstream(tmp_path)
    out = tmp_path / "out.npz"
    status, _, err = call(capsys, "nnr_decode", src, "-o", out, "--verify", "0" * 64, "-q")
    assert status == common.EXIT_FAILED and "checksum mismatch" in one_line(err, "nnr_decode")
    assert not out.exists()
    out.write_bytes(b"keep")
    assert call(capsys, "nnr_decode", src, "-o", out, "--verify", "0" * 64, "-q")[0] == common.EXIT_FAILED
    assert out.read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["m.nnr", "out.npz"]


def test_rd_checks_before_sweeping(tmp_path, capsys):
    src = model(tmp_path)
    status, _, err = call(capsys, "nnr_rd", src, "--qp", "-30", "-o", tmp_path / "no" / "rep", "--no-plot")
    assert status == common.EXIT_USAGE and "does not exist" in one_line(err, "nnr_rd")
    status, _, err = call(capsys, "nnr_rd", src, "--qp", "a:b", "-o", tmp_path / "rep", "--no-plot")
    assert status == common.EXIT_USAGE and "--qp" in one_line(err, "nnr_rd")
    status, _, err = call(capsys, "nnr_rd", tmp_path / "missing.npz", "-o", tmp_path / "rep", "--no-plot")
    assert status == common.EXIT_FAILED and "no such file" in one_line(err, "nnr_rd")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_unexpected_exception_is_one_line(capsys, monkeypatch):
    def body(args):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.delenv("NNR_DEBUG", raising=False)
    assert common.run("nnr_x", body, None, subject="in.bin") == common.EXIT_FAILED
    line = one_line(capsys.readouterr().err, "nnr_x")
    assert line.startswith("nnr_x: in.bin: unexpected RuntimeError: boom second line") and "NNR_DEBUG" in line
    monkeypatch.setenv("NNR_DEBUG", "1")
    assert common.run("nnr_x", body, None, subject="in.bin") == common.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("nnr_x: in.bin: unexpected RuntimeError")


def test_run_restores_the_signal_handlers():
    import signal
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def body(args):
        assert signal.getsignal(signal.SIGTERM) is common._on_signal
        raise KeyboardInterrupt
    assert common.run("nnr_x", body, None) == common.EXIT_INTERRUPTED
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_documents_exit_statuses(tool):
    r = run(tool, "--help")
    assert r.returncode == 0 and "exit status:" in r.stdout and "130" in r.stdout and "143" in r.stdout


def test_report_does_not_repeat_the_file_name():
    from nnr.errors import EncoderConfigError
    assert common.describe(EncoderConfigError("a.pt: not a\nPyTorch file"), "a.pt") == \
        "EncoderConfigError: not a PyTorch file"
    assert common.describe(EncoderConfigError("b.pt: x"), "a.pt") == "EncoderConfigError: b.pt: x"
