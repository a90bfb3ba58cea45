"""A dependency-free progress display for the command-line tools (not part of the codec).

Shown on stderr only when stderr is a terminal or when forced; quiet=True turns it off whatever
else is said. On a terminal one line is redrawn in place (at most every `min_interval` seconds,
and always for the last item); forced onto a pipe or a file, each item gets its own line.

    with Progress(len(tensors), label="encode") as bar:
        for name, t in tensors.items():
            ...
            bar.update(item=name, postfix=f"bytes {format_bytes(n)} ratio {ratio:.1f}x")
"""
import os
import shutil
import sys
import time


def format_bytes(n):
    """1234567 -> '1.2 MB' (decimal units, as file managers show)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class Progress:
    """Progress over `total` items (None: unknown count)."""

    def __init__(self, total=None, *, label="", quiet=False, force=False, stream=None,
                 min_interval=0.1):
        self.total = total
        self.label = label
        self.count = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.enabled = not quiet and (force or self.tty)
        self.min_interval = min_interval
        self._last_draw = None
        self._width = 0
        self._start = time.monotonic()

    def update(self, n=1, *, item=None, postfix=None):
        """Count `n` more items done; `item` names the last one, `postfix` is free text."""
        self.count += n
        if not self.enabled:
            return
        now = time.monotonic()
        last = self.total is not None and self.count >= self.total
        if self.tty and not last and self._last_draw is not None \
                and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self._draw(self.render(item, postfix, now - self._start))

    def render(self, item=None, postfix=None, elapsed=0.0):
        """The progress line as text (without line control)."""
        parts = [self.label] if self.label else []
        if self.total:
            done = min(self.count, self.total)
            filled = done * 20 // self.total
            parts.append(f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total}")
        else:
            parts.append(str(self.count))
        parts.append(f"{elapsed:.1f}s")
        if item:
            parts.append(str(item))
        if postfix:
            parts.append(str(postfix))
        return " ".join(parts)

    def _draw(self, line):
        if self.tty:
            columns = shutil.get_terminal_size((80, 24)).columns
            line = line[:max(columns - 1, 10)]
            self.stream.write("\r" + line + "\x1b[K")
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        """End the display: on a terminal, move past the progress line."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(items, *, total=None, label="", quiet=False, force=False, stream=None):
    """Iterate over `items`, counting one per item (label each with the item if it is a str)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with Progress(total, label=label, quiet=quiet, force=force, stream=stream) as bar:
        for x in items:
            yield x
            bar.update(item=x if isinstance(x, str) else None)


def _isatty(stream):
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
