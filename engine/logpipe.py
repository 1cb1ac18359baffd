"""A stage's output on its way to the stage's log, which the consumer downloads.

The stage writes into a pipe and the engine copies what it reads into the log: the stage holds
no descriptor of the log file, so it cannot truncate it, seek in it or rewrite the engine's
lines. On the way each line is checked: a URL loses its credentials, query and fragment; a
line that begins as the engine's own lines do (a UTC time, then ` engine: `) is marked as the
stage's, so the engine's lines cannot be forged; and the log stops growing at its limit, with
one line of the engine's saying so (the stage's output is still read, so it never blocks).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path

LINE_BYTES = 64 * 1024  # a longer line is cut into pieces of this size
ENGINE_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ engine: ")
URL = re.compile(rb"\b([a-zA-Z][a-zA-Z0-9+.-]{1,15}://)(?:[^\s/?#@]*@)?([^\s?#]*)(?:[?#]\S*)?")
STAGE_MARK = b"(stage) "


class LogFilter:
    """What of a stage's output its log keeps, fed in pieces as it arrives."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.partial = b""
        self.full = False

    def feed(self, data: bytes) -> bytes:
        self.partial += data
        lines = self.partial.split(b"\n")
        self.partial = lines.pop()
        while len(self.partial) >= LINE_BYTES:
            lines.append(self.partial[:LINE_BYTES])
            self.partial = self.partial[LINE_BYTES:]
        return b"".join(self._kept(line) for line in lines)

    def close(self) -> bytes:
        rest, self.partial = self.partial, b""
        return self._kept(rest) if rest else b""

    def _kept(self, line: bytes) -> bytes:
        line = URL.sub(rb"\1\2", line)
        if ENGINE_LINE.match(line):
            line = STAGE_MARK + line
        line += b"\n"
        if self.full:
            return b""
        if len(line) > self.left:
            self.full = True
            return b"(the log reached its limit here: the rest of the stage's output is dropped)\n"
        self.left -= len(line)
        return line


class LogPipe:
    """The pipe a stage writes to and the thread that copies it into `log`."""

    def __init__(self, log: Path, *, limit: int) -> None:
        self.log = log
        self.filter = LogFilter(limit - _size(log))
        self.read_end, self.write_end = os.pipe()
        self.thread = threading.Thread(target=self._copy, name=f"log {log.name}", daemon=True)

    def start(self) -> None:
        """Once the stage has its copy of the write end: the engine closes its own, so the
        pipe ends when the stage's last process does."""
        os.close(self.write_end)
        self.thread.start()

    def abandon(self) -> None:
        """The stage never started: nothing to copy."""
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)

    def wait(self, timeout: float = 5.0) -> None:
        """Everything the stage wrote is in the log (or `timeout` passed)."""
        self.thread.join(timeout)

    def _copy(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        out = os.open(self.log, flags, 0o640)
        try:
            while data := os.read(self.read_end, LINE_BYTES):
                _write(out, self.filter.feed(data))
            _write(out, self.filter.close())
        finally:
            os.close(out)
            os.close(self.read_end)


def kept_text(text: str, limit: int) -> str:
    """A stage's whole output, as its log keeps it (for runners that read it at the end)."""
    kept = LogFilter(limit)
    return (kept.feed(text.encode()) + kept.close()).decode(errors="replace")


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0
