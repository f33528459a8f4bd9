"""Crash-safe streaming JSONL writer.

Each record is serialised with orjson and handed to the kernel in one ``write`` on a
file opened with ``O_APPEND`` and no user-space buffer, so once ``write()`` returns
the line survives the death of the process (SIGKILL included); a crash can lose at
most the line being written. ``close()`` (and leaving the ``with`` block) fsyncs, so
the file also survives a machine crash from then on; ``fsync_every=n`` fsyncs every
n records as well.

Opening an existing file appends to it. When the file does not end with a newline
(``repair_tail=True``, the default), its last line is looked at before anything is
appended, and a confirmed record is never lost:

* the last line is a complete JSON value (a record whose final newline is missing, e.g.
  an edited file): it is kept and the newline is added (with a warning), so resume,
  which counts that record as done, and the file agree;
* the last line is not JSON (the previous writer died mid-line): that partial line is
  cut off (with a warning naming the byte count), so appended records start on a fresh
  line; it was never a confirmed record (the writer hands each line to the kernel with
  its newline in one ``write``);
* the file separates records with a bare carriage return (CR-only line endings): the
  writer refuses (ValueError) and changes nothing, since no line can be told apart.

``"\r\n"`` (CRLF) files are complete lines and are left as they are.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import orjson

from sample_smart.io_checks import loads_line

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


def _unterminated_tail(path: Path) -> tuple[int, bool] | None:
    """``(offset, complete)`` of the last line of ``path`` when it lacks its newline (``None``
    when the file is empty or ends with one); ``complete``: the line is a JSON value.
    ValueError for CR-only line endings (see the module doc)."""
    start = _partial_tail_start(path)
    if start is None:
        return None
    with open(path, "rb") as f:
        f.seek(start)
        tail = f.read()
    if b"\r" in tail.rstrip(b"\r"):
        raise ValueError(
            f"{path}: records are separated by a bare carriage return (CR-only line endings); "
            f"convert the file to LF line endings (e.g. tr '\\r' '\\n') before appending; nothing was changed"
        )
    try:
        loads_line(tail, first=start == 0)
    except orjson.JSONDecodeError:
        return start, False
    return start, True


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
        tail = _unterminated_tail(self.path) if self.path.exists() and repair_tail else None
        if tail is not None and not tail[1]:
            cut = tail[0]
            lost = self.path.stat().st_size - cut
            warnings.warn(
                f"{self.path}: removing an incomplete last line ({lost} bytes) left by an interrupted writer",
                RuntimeWarning,
                stacklevel=2,
            )
            os.truncate(self.path, cut)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if tail is not None and tail[1]:
            warnings.warn(
                f"{self.path}: the last record had no final newline; added it (the record is kept)",
                RuntimeWarning,
                stacklevel=2,
            )
            os.write(self._fd, b"\n")

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
