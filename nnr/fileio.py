"""Output files that behave like cp's: a failed or interrupted write leaves no half-written file
behind, modes follow the umask (an existing file keeps its own), and devices and named pipes
(/dev/null, a FIFO) are written into rather than replaced."""
import io
import os
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager


@contextmanager
def atomic_output(path, mode="wb"):
    """Yield a file object that writes `path`.

    A regular file (new or existing; a symbolic link is followed) is written to a temporary file
    next to it (".nnr-*") that replaces it only when the block succeeds; on any exception,
    KeyboardInterrupt included, the temporary file is removed and `path` is left as it was. A new
    file gets mode 0o666 & ~umask, an existing one keeps its mode. A character device, FIFO or
    socket is opened and written directly (a mode with "+", which reads back and seeks, goes
    through an anonymous temporary file copied into it at the end).
    """
    path = os.fspath(path)
    target = os.path.realpath(path) if os.path.islink(path) else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "Is a directory", path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        with _direct_output(target, mode) as f:
            yield f
        return
    directory = os.path.dirname(os.path.abspath(target))
    tmp = None
    try:
        with deferred_interrupts():
            fd, tmp = tempfile.mkstemp(prefix=".nnr-", suffix=os.path.basename(target), dir=directory)
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


class _Interrupts:
    """Signal handlers of the command-line tools raise through interrupt(): inside
    deferred_interrupts() the exception waits for the end of the block. atomic_output creates its
    temporary file so (a Ctrl-C inside tempfile.mkstemp would leave the file behind, its name
    unknown to the cleanup code)."""
    depth = 0
    held = None


def interrupt(exc):
    """Raise `exc` (from a signal handler), or hold it while a temporary file is being created."""
    if _Interrupts.depth:
        _Interrupts.held = exc
        return
    raise exc


@contextmanager
def deferred_interrupts():
    """Hold what interrupt() raises in the main thread until the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield                    # signal handlers run in the main thread only
        return
    _Interrupts.depth += 1
    try:
        yield
    finally:
        _Interrupts.depth -= 1
    if not _Interrupts.depth and _Interrupts.held is not None:
        exc, _Interrupts.held = _Interrupts.held, None
        raise exc


class _Stream(io.RawIOBase):
    """A device or pipe as a write-only stream without positions: /dev/null accepts seek() and
    tell() but keeps no position, which misleads writers such as zipfile that take offsets from
    tell(); without them they write as they would to a pipe."""

    def __init__(self, raw):
        super().__init__()
        self._raw = raw

    def writable(self):
        return True

    def write(self, b):
        return self._raw.write(b)

    def fileno(self):
        return self._raw.fileno()

    def close(self):
        if not self.closed:
            try:
                super().close()
            finally:
                self._raw.close()


@contextmanager
def _direct_output(target, mode):
    """Write a device or a pipe in place (what cp does), spooling when the writer must seek."""
    plain = mode.replace("+", "")
    if plain == mode:
        f = io.BufferedWriter(_Stream(open(target, "wb", buffering=0)))
        if "b" not in mode:
            f = io.TextIOWrapper(f, encoding="utf-8")
        with f:
            yield f
        return
    with tempfile.TemporaryFile(mode) as spool:
        yield spool
        spool.flush()
        spool.seek(0)
        with open(target, plain) as f:
            shutil.copyfileobj(spool, f)


def _umask():
    """The process's umask, read without changing it where /proc tells it (os.umask sets it, which
    is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
