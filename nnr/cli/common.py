"""What the command-line tools share: exit statuses, one-line error reports, signal handling and the
checks of an output path made before any expensive work (not part of the codec).

Every failure ends in one line on stderr, "PROG: what went wrong", and a non-zero exit status;
an unexpected exception is named by its class (NNR_DEBUG=1 or --debug adds the traceback).
SIGINT and SIGTERM raise in the main thread, so the atomic outputs (nnr.fileio) remove their
temporary files on the way out.
"""
import argparse
import importlib
import os
import signal
import stat
import sys
import traceback

from nnr.errors import NNRError
from nnr.fileio import deferred_interrupts, interrupt

EXIT_OK = 0
EXIT_FAILED = 1          # the input is missing, unreadable or invalid; coding failed; --verify mismatch
EXIT_USAGE = 2           # the command line (argparse's status), or an output that cannot be written
EXIT_INTERRUPTED = 130   # 128 + SIGINT
EXIT_TERMINATED = 143    # 128 + SIGTERM

EXIT_STATUS_HELP = """exit status:
  0    success
  1    the input is missing, unreadable or not what was expected; encoding or decoding failed;
       --verify mismatch
  2    usage: an invalid option, or an output that cannot be written (its folder is missing, it
       is a directory, its extension is unknown, no permission, disk full)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): no output and no temporary file is left

An output file is written through a temporary file next to it, renamed over it when complete
(a new file's mode comes from the umask, an existing file keeps its mode); a device or a named
pipe (-o /dev/null) is written into. --debug or NNR_DEBUG=1 shows the traceback of an
unexpected error."""

# keyword of the Python API -> the flag that sets it on the command line
_FLAGS = {"allow_pickle": "--allow-pickle", "allow_external": "--allow-external"}
# model format -> the library its loader and saver import
_LIBRARIES = {"pt": "torch", "safetensors": "safetensors", "h5": "h5py", "onnx": "onnx"}


class ToolError(Exception):
    """A failure reported as one line (without the program's name) and an exit status."""

    def __init__(self, message, status=EXIT_FAILED):
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that cleanup code runs."""


def parser(prog, description):
    """An ArgumentParser whose --help ends with the exit statuses."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=EXIT_STATUS_HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def int_in(lo=None, hi=None):
    """argparse type: an integer in lo..hi (None: unbounded), so a bad value is a usage error
    that names the flag."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {span}, not {value}")
        return value
    return parse


def check_output(path, flag="-o"):
    """Refuse an output path that cannot be written, before any work is done."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ToolError(f"{path}: is a directory; {flag} takes a file name", EXIT_USAGE)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ToolError(f"{path}: the folder {folder} does not exist", EXIT_USAGE)
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ToolError(f"{path}: permission denied", EXIT_USAGE)
        if not stat.S_ISREG(os.stat(path).st_mode):
            return                      # a device or a pipe is written into, not replaced
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ToolError(f"{path}: permission denied: cannot create a file in {folder}", EXIT_USAGE)


def is_onnx_path(path, fmt=None) -> bool:
    """Whether a model file is an ONNX model: `fmt` says so, or without it the extension."""
    return (fmt or "").lower() == "onnx" or (fmt is None and os.fspath(path).lower().endswith(".onnx"))


def model_format(path, fmt, *, what="model", onnx=True, flag="--format"):
    """The format of a model file (`fmt`, from `flag`, else the extension; "onnx" when `onnx`); a
    usage error naming the known formats if neither says."""
    from nnr.modelio import FORMATS, detect_format
    if onnx and is_onnx_path(path, fmt):
        return "onnx"
    known = ", ".join(FORMATS + (("onnx",) if onnx else ()))
    try:
        return detect_format(path, fmt)
    except NNRError:
        if fmt is not None:
            raise ToolError(f"unknown {flag} {fmt!r}; expected one of {known}", EXIT_USAGE) from None
        ext = os.path.splitext(os.fspath(path))[1] or "(none)"
        how = f"pass {flag} ({known})" if flag else f"expected one of {known}"
        raise ToolError(f"{path}: cannot tell the {what} format from the extension {ext!r}; {how}",
                        EXIT_USAGE) from None


def preload(fmt):
    """Import the library of a model format before the work starts, holding Ctrl-C and SIGTERM
    until the import is done: a signal inside an extension module's initialisation can crash the
    interpreter (protobuf's, under onnx, does)."""
    name = _LIBRARIES.get(fmt)
    if name is None:
        return
    with deferred_interrupts():
        try:
            importlib.import_module(name)
        except ImportError:
            pass                 # the loader or saver names the package to install


def cannot_write(path, err):
    """The ToolError for an OSError met while writing `path`."""
    return ToolError(f"cannot write {os.fspath(path)}: {err.strerror or err}", EXIT_USAGE)


def describe(err, subject=None):
    """An exception as one line: an NNRError's class and message, the CLI's flag names where the
    message names a keyword of the Python API (see nnr.modelio.dtypes.option_error), without a
    leading "SUBJECT: " that the report already starts with."""
    option = getattr(err, "option", None)
    if option in _FLAGS and getattr(err, "template", None):
        text = err.template.format(option=_FLAGS[option], **err.fields)
    else:
        text = str(err)
    text = " ".join(text.split())
    if subject is not None and text.startswith(f"{os.fspath(subject)}: "):
        text = text[len(os.fspath(subject)) + 2:]
    return f"{type(err).__name__}: {text}"


def run(prog, body, args, *, subject=None):
    """Run body(args) -> exit status; every failure becomes one line on stderr and a status.

    subject: the file an NNRError or an unexpected error is reported against (the input)."""
    debug = getattr(args, "debug", False) or os.environ.get("NNR_DEBUG", "") not in ("", "0")
    handlers = _catch_signals()
    try:
        return body(args)
    except BaseException as err:     # noqa: B902 -- the report of last resort
        return _report(prog, err, subject, debug)
    finally:
        _restore_signals(handlers)


def _report(prog, err, subject, debug):
    if isinstance(err, SystemExit):
        raise err
    _quiet_signals()
    if isinstance(err, BrokenPipeError):
        _detach_stdout()             # `nnr_info x | head`: the reader left; end quietly
        return EXIT_FAILED
    where = f"{os.fspath(subject)}: " if subject is not None else ""
    if isinstance(err, KeyboardInterrupt):
        terminated = isinstance(err, Terminated)
        line, status = ("terminated", EXIT_TERMINATED) if terminated else ("interrupted", EXIT_INTERRUPTED)
    elif isinstance(err, ToolError):
        line, status = str(err), err.status
    elif isinstance(err, NNRError):
        line, status = where + describe(err, subject), EXIT_FAILED
    elif isinstance(err, MemoryError):
        line, status = f"{where}out of memory", EXIT_FAILED
    else:
        text = " ".join(str(err).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        line = f"{where}unexpected {type(err).__name__}" + (f": {text}" if text else "")
        if not debug:
            line += " (NNR_DEBUG=1 shows the traceback)"
        status = EXIT_FAILED
    _flush(sys.stdout)
    if debug and not isinstance(err, KeyboardInterrupt):
        traceback.print_exception(err, file=sys.stderr)
    print(f"{prog}: {line}", file=sys.stderr)
    return status


def _on_signal(signum, frame):
    interrupt(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())


def _catch_signals():
    """SIGINT raises KeyboardInterrupt (unless it is ignored, as in a background job), SIGTERM
    Terminated, both through nnr.fileio.interrupt; returns the handlers before, to restore. Main
    thread only: elsewhere the signals are left alone."""
    try:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        if before[signal.SIGINT] is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        return before
    except ValueError:
        return {}


def _quiet_signals():
    """While the failure is reported, a second Ctrl-C or SIGTERM does not interrupt the report."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    except ValueError:
        pass


def _restore_signals(handlers):
    try:
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    except ValueError:
        pass


def _flush(stream):
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


def _detach_stdout():
    """Point stdout at /dev/null so that the interpreter's final flush meets no broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
