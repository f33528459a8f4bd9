"""Streaming JSONL readers that name the file and line of every bad line.

Lines are read one at a time (binary, ``orjson.loads``; the shared reader
``sample_smart.io_checks.iter_json_lines``), so memory stays bounded by the longest line
whatever the file size. Only regular files are opened; UTF-8 only, a leading BOM is
accepted; lines end at ``"\n"`` only (a U+2028 inside a string is not a line break). A
line that is not UTF-8, not valid JSON, the unterminated last line of a file whose writer
died, or records separated by a bare CR, is reported as ``"<path>:<line>: ..."``: by
raising :class:`TraceFormatError` (``on_error="raise"``, the default) or with a warning
and skipping it (``on_error="skip"``). Blank lines are ignored. ``completed_ids`` (resume)
counts only records that pass their schema's validator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sample_smart.io_checks import ON_ERROR, InputFileError, InputFileWarning, iter_json_lines
from sample_smart.io_checks import report as _report_line

from .schemas import GENERATION, TEACHER_FORCED, VALIDATORS, SchemaError

__all__ = [
    "ON_ERROR",
    "TraceFormatError",
    "TraceFormatWarning",
    "completed_ids",
    "iter_generation",
    "iter_teacher_forced",
    "read_jsonl",
    "read_records",
]


class TraceFormatError(InputFileError):
    """A corrupt, truncated or off-schema line; ``path`` and ``line`` (1-based) locate it."""


class TraceFormatWarning(InputFileWarning):
    """Emitted for each line skipped with ``on_error="skip"``."""


def _report(path, line: int, message: str, on_error: str) -> None:
    _report_line(path, line, message, on_error, error=TraceFormatError, warning=TraceFormatWarning)


def read_jsonl(path: str | os.PathLike, *, on_error: str = "raise") -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSONL file
    (``sample_smart.io_checks.iter_json_lines``: regular files, UTF-8, BOM accepted, lines
    split at ``\\n`` only)."""
    return iter_json_lines(path, on_error=on_error, error=TraceFormatError, warning=TraceFormatWarning)


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


def completed_ids(path: str | os.PathLike, key: str = "id", *, schema: str | None = None) -> set[str]:
    """Ids (field ``key``) of the records already in ``path`` that are complete **and valid**
    records of their schema (of ``schema`` when given), for resume.

    Every other line (corrupt, truncated, off-schema, failing its validator, lacking
    ``key``) is reported with a :class:`TraceFormatWarning` naming ``path:line`` and is not
    counted as done, so its example is redone. A missing file gives an empty set."""
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    for rec in read_records(path, "skip", schema=schema, validate=True):
        if key in rec:
            done.add(str(rec[key]))
    return done
