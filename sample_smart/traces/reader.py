"""Streaming JSONL readers that name the file and line of every bad line.

Lines are read one at a time (binary, ``orjson.loads``), so memory stays bounded by
the longest line whatever the file size. A line that is not valid JSON, or that is
the unterminated last line of a file whose writer died, is reported as
``"<path>:<line>: ..."``: by raising :class:`TraceFormatError` (``on_error="raise"``,
the default) or with a warning and skipping it (``on_error="skip"``). Blank lines are
ignored.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from .schemas import TEACHER_FORCED, GENERATION, VALIDATORS, SchemaError

ON_ERROR = ("raise", "skip")


class TraceFormatError(ValueError):
    """A corrupt, truncated or off-schema line; ``path`` and ``line`` (1-based) locate it."""

    def __init__(self, path: str | os.PathLike, line: int, message: str):
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}:{line}: {message}")


class TraceFormatWarning(UserWarning):
    """Emitted for each line skipped with ``on_error="skip"``."""


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def _report(path, line: int, message: str, on_error: str) -> None:
    err = TraceFormatError(path, line, message)
    if on_error == "raise":
        raise err
    warnings.warn(f"skipping {err}", TraceFormatWarning, stacklevel=3)


def read_jsonl(path: str | os.PathLike, *, on_error: str = "raise") -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSONL file."""
    _check_on_error(on_error)
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.endswith(b"\n"):
                    msg = f"truncated last line ({len(line)} bytes, no newline; the writer was interrupted?)"
                else:
                    msg = f"invalid JSON ({exc})"
                _report(path, lineno, msg, on_error)
                continue
            yield lineno, value


def read_records(
    path: str | os.PathLike,
    on_error: str = "raise",
    *,
    schema: str | None = None,
    validate: bool | Callable[[Mapping[str, Any]], Any] = False,
) -> Iterator[dict]:
    """Stream the JSON objects of a trace file.

    ``schema`` keeps only records whose ``"schema"`` equals it (others are errors);
    ``validate=True`` checks each record against its schema's validator (or pass a
    callable). Errors follow ``on_error`` and name ``path:line``.
    """
    for lineno, rec in read_jsonl(path, on_error=on_error):
        if not isinstance(rec, dict):
            _report(path, lineno, f"expected a JSON object, got {type(rec).__name__}", on_error)
            continue
        if schema is not None and rec.get("schema") != schema:
            _report(path, lineno, f"expected schema {schema!r}, got {rec.get('schema')!r}", on_error)
            continue
        if validate:
            check = validate if callable(validate) else VALIDATORS.get(rec.get("schema"))
            if check is None:
                _report(path, lineno, f"unknown schema {rec.get('schema')!r}", on_error)
                continue
            try:
                check(rec)
            except SchemaError as exc:
                _report(path, lineno, str(exc), on_error)
                continue
        yield rec


def iter_teacher_forced(path: str | os.PathLike, on_error: str = "raise", *, validate: bool = True) -> Iterator[dict]:
    """Stream teacher-forced records (schema ``sample_smart.teacher_forced/1``), validated."""
    return read_records(path, on_error, schema=TEACHER_FORCED, validate=validate)


def iter_generation(path: str | os.PathLike, on_error: str = "raise", *, validate: bool = True) -> Iterator[dict]:
    """Stream generation records (schema ``sample_smart.generation/1``), validated."""
    return read_records(path, on_error, schema=GENERATION, validate=validate)


def completed_ids(path: str | os.PathLike, key: str = "id") -> set[str]:
    """Ids of the complete records already in ``path`` (for resume); bad lines are skipped
    with a warning, a missing file gives an empty set."""
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    for _, rec in read_jsonl(path, on_error="skip"):
        if isinstance(rec, dict) and key in rec:
            done.add(str(rec[key]))
    return done
