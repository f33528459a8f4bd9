"""Crash-safe streaming JSONL writer.

Each record is serialised with orjson and handed to the kernel in one ``write`` on a
file opened with ``O_APPEND`` and no user-space buffer, so once ``write()`` returns
the line survives the death of the process (SIGKILL included); a crash can lose at
most the line being written. ``close()`` (and leaving the ``with`` block) fsyncs, so
the file also survives a machine crash from then on; ``fsync_every=n`` fsyncs every
n records as well.

Opening an existing file appends to it. If the previous writer died mid-line, the
file ends with a partial line; by default it is cut off (with a warning naming the
byte count) so that appended records start on a fresh line. Complete lines are never
touched.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps_line(record: Any) -> bytes:
    """One JSONL line (bytes, newline-terminated). orjson writes NaN/inf as null."""
    return orjson.dumps(record, option=_OPTIONS) + b"\n"


def _partial_tail_start(path: Path) -> int | None:
    """Offset where an unterminated last line starts, or None if the file ends cleanly."""
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0


class TraceWriter:
    """Append JSON records to ``path``, one line each, flushed to the kernel per record.

    >>> with TraceWriter("traces.jsonl") as w:
    ...     w.write({"schema": "...", "id": "a"})
    """

    def __init__(self, path: str | os.PathLike, *, repair_tail: bool = True, fsync_every: int | None = None):
        if fsync_every is not None and fsync_every < 1:
            raise ValueError(f"fsync_every must be None or an int >= 1, got {fsync_every!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_every = fsync_every
        self.n_written = 0
        self.bytes_written = 0
        if self.path.exists() and repair_tail:
            cut = _partial_tail_start(self.path)
            if cut is not None:
                lost = self.path.stat().st_size - cut
                warnings.warn(
                    f"{self.path}: removing an incomplete last line ({lost} bytes) left by an interrupted writer",
                    RuntimeWarning,
                    stacklevel=2,
                )
                os.truncate(self.path, cut)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, record: Any) -> None:
        """Serialise and append one record (a complete line or nothing is the goal)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: write to a closed TraceWriter")
        data = dumps_line(record)  # serialise fully before touching the file
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.n_written += 1
        self.bytes_written += len(data)
        if self.fsync_every and self.n_written % self.fsync_every == 0:
            os.fsync(self._fd)

    def write_many(self, records) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass
