"""Output files behave like cp's (nnr.fileio.atomic_output and the tools): the mode of a new file
comes from the umask, an existing file keeps its mode, a symbolic link is written through, a
device or FIFO is written into and never replaced, and a failed or interrupted write leaves nothing."""
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

import nnr
from nnr.cli import common
from nnr.fileio import atomic_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tool, *args, umask=None):
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the umask for one test (restored afterwards)."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda m: os.umask(m)
    os.umask(saved)


@pytest.fixture
def null_device(tmp_path):
    """A character device that discards what is written: a private one where mknod is allowed."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (OSError, AttributeError):
        return "/dev/null"
    return str(path)


def fifo_reader(path):
    """Start a thread reading the FIFO `path` to its end; returns (thread, chunks)."""
    chunks = []

    def read():
        with open(path, "rb") as f:
            chunks.append(f.read())
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, chunks


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640), (0o002, 0o664)])
def test_new_file_mode_follows_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    path = tmp_path / "new.bin"
    with atomic_output(path) as f:
        f.write(b"x")
    assert mode(path) == want


@pytest.mark.parametrize("before", [0o644, 0o604, 0o664, 0o640])
def test_existing_file_keeps_its_mode(tmp_path, umask, before):
    umask(0o077)
    path = tmp_path / "old.bin"
    path.write_bytes(b"old")
    os.chmod(path, before)
    with atomic_output(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and mode(path) == before


def test_symbolic_link_is_written_through(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to("real.bin")
    with atomic_output(link) as f:
        f.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_failed_write_leaves_nothing(tmp_path, exc):
    path = tmp_path / "out.bin"
    path.write_bytes(b"keep")
    with pytest.raises(exc):
        with atomic_output(path) as f:
            f.write(b"partial")
            assert len(os.listdir(tmp_path)) == 2        # the temporary file beside it
            raise exc()
    assert os.listdir(tmp_path) == ["out.bin"] and path.read_bytes() == b"keep"


@pytest.mark.parametrize("mode_", ["wb", "w+b"])
def test_device_is_written_into(null_device, mode_):
    before = os.stat(null_device)
    with atomic_output(null_device, mode_) as f:
        f.write(b"x" * 1000)
    after = os.stat(null_device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


@pytest.mark.parametrize("mode_", ["wb", "w+b"])
def test_fifo_is_written_into(tmp_path, mode_):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, chunks = fifo_reader(fifo)
    with atomic_output(fifo, mode_) as f:
        f.write(b"abc")
        if "+" in mode_:             # a writer that seeks back (h5py does): spooled, then copied
            f.seek(0)
            f.write(b"A")
    thread.join(30)
    assert chunks == [b"Abc" if "+" in mode_ else b"abc"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        with atomic_output(tmp_path) as f:
            f.write(b"x")


# --- the tools ------------------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, **{"a.weight": rng.normal(0, 0.05, (16, 8)).astype(np.float32)})
    return path


def test_encode_and_decode_modes(tmp_path, model):
    out = tmp_path / "m.nnr"
    assert run("nnr_encode", model, "-o", out, "-q", umask=0o027).returncode == 0
    assert mode(out) == 0o640
    os.chmod(out, 0o644)
    assert run("nnr_encode", model, "-o", out, "-q", umask=0o077).returncode == 0
    assert mode(out) == 0o644                                # was 0o600 whatever the umask
    dec = tmp_path / "d.npz"
    assert run("nnr_decode", out, "-o", dec, "-q", umask=0o002).returncode == 0
    assert mode(dec) == 0o664


@pytest.mark.parametrize("fmt", ["npz", "h5"])
def test_tools_write_into_a_device(tmp_path, model, null_device, fmt):
    if fmt == "h5":
        pytest.importorskip("h5py")
    before = os.stat(null_device)
    r = run("nnr_encode", model, "-o", null_device, "-q")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "m.nnr"
    src.write_bytes(nnr.encode({"w": np.ones((4, 4), np.float32)}))
    r = run("nnr_decode", src, "-o", null_device, "--format", fmt, "-q")
    assert r.returncode == 0, r.stderr
    after = os.stat(null_device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_full_device_is_a_write_error(tmp_path, model):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    r = run("nnr_encode", model, "-o", "/dev/full", "-q")
    assert r.returncode == common.EXIT_USAGE and "Traceback" not in r.stderr
    assert r.stderr.strip() == "nnr_encode: cannot write /dev/full: No space left on device"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_encode_into_a_fifo(tmp_path, model):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, chunks = fifo_reader(fifo)
    r = run("nnr_encode", model, "-o", fifo, "-q")
    thread.join(60)
    assert r.returncode == 0, r.stderr
    with np.load(model) as z:
        assert nnr.decode(chunks[0])["a.weight"].shape == z["a.weight"].shape
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "pipe"]


@pytest.mark.parametrize("fmt", ["npz", "pt", "safetensors", "h5"])
def test_decode_into_a_fifo(tmp_path, fmt):
    needs = {"pt": "torch", "safetensors": "safetensors", "h5": "h5py"}
    if fmt in needs:
        pytest.importorskip(needs[fmt])
    from nnr.modelio import load_model
    src = tmp_path / "m.nnr"
    src.write_bytes(nnr.encode({"w": np.linspace(-1, 1, 48, dtype=np.float32).reshape(6, 8)}))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, chunks = fifo_reader(fifo)
    r = run("nnr_decode", src, "-o", fifo, "--format", fmt, "-q")
    thread.join(60)
    assert r.returncode == 0, r.stderr
    piped = tmp_path / f"piped.{fmt}"
    piped.write_bytes(chunks[0])
    assert run("nnr_decode", src, "-o", tmp_path / f"file.{fmt}", "-q").returncode == 0
    a, b = load_model(piped).tensors["w"], load_model(tmp_path / f"file.{fmt}").tensors["w"]
    assert np.array_equal(a, b) and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_interrupt_while_the_temporary_file_is_created(tmp_path, monkeypatch):
    """A signal handled inside tempfile.mkstemp (after it made the file, before its name is
    returned) is held until the name is known: the file is removed."""
    import tempfile

    from nnr import fileio
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        made = real(*args, **kwargs)
        fileio.interrupt(KeyboardInterrupt())         # what the tools' signal handlers call
        return made
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "out.bin") as f:
            f.write(b"never")
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):           # outside a deferred block it is raised at once
        fileio.interrupt(KeyboardInterrupt())
