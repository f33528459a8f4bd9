"""Reading files named by users, and writing outputs that never replace an input.

One place for what every command and loader needs, so that each reports the same way:

* :class:`InputFileError` (a ``ValueError``): ``"<path>:<line>: what is wrong"`` (or
  ``"<path>: what"`` when no line applies). CLI commands turn it into one line on stderr
  and exit status 2 (:func:`cli_errors`), never a traceback.
* :func:`open_regular` / :func:`read_user_file`: open **regular files only** (a FIFO would
  block, ``/dev/zero`` would never end, a directory is a mistake); ``read_user_file``
  also refuses files larger than ``max_bytes`` and reads at most ``max_bytes + 1`` bytes,
  so a file that grows while it is read cannot exhaust memory either. Calibration files
  are limited to :data:`CALIBRATION_MAX_BYTES` (16 MiB; a real one is a few kB).
* :func:`iter_json_lines` (JSONL) and :func:`parse_json_document` / :func:`read_json_file`
  (one JSON document): UTF-8 only, a leading UTF-8 byte-order mark is accepted (and
  dropped: spreadsheets write one), lines end at ``"\\n"`` only (``"\\r\\n"`` works since
  ``"\\r"`` is JSON whitespace; U+2028/U+2029 inside a string do not end a line, unlike
  ``str.splitlines``), a file whose records are separated by a bare ``"\\r"`` is reported
  as such. NaN/Infinity literals are not JSON and are refused.
* :func:`refuse_overwrite` / :func:`distinct_inputs`: an output path may not be an input
  (compared after resolving symlinks, and with ``os.path.samefile`` so that hard links
  count too); the same input file may not be given twice (its records would count twice).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"
CALIBRATION_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # one JSON document (metrics, grid, calibration file)
ON_ERROR = ("raise", "skip")


class InputFileError(ValueError):
    """A bad input file; ``path``, ``line`` (1-based, or None) and ``reason`` locate it."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}:{line}: {message}" if line is not None else f"{self.path}: {message}")


class InputFileWarning(UserWarning):
    """Emitted for each line skipped with ``on_error="skip"``."""


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def report(
    path,
    line: int | None,
    message: str,
    on_error: str,
    *,
    error: type[InputFileError] = InputFileError,
    warning: type[Warning] = InputFileWarning,
) -> None:
    """Raise ``error(path, line, message)`` (on_error "raise") or warn ``skipping <it>`` ("skip")."""
    err = error(path, line, message)
    if on_error == "raise":
        raise err
    warnings.warn(f"skipping {err}", warning, stacklevel=4)


# ---- opening ------------------------------------------------------------------------
def open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """``(fd, stat)`` of ``path`` opened read-only; InputFileError unless it is a regular file.

    Opened with ``O_NONBLOCK`` so that a FIFO cannot block the open; the type is checked on
    the opened descriptor (``fstat``), so a file swapped after a check cannot slip through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputFileError(path, None, "no such file") from None
    except PermissionError:
        raise InputFileError(path, None, "permission denied") from None
    except IsADirectoryError:
        raise InputFileError(path, None, "is a directory, expected a file") from None
    except OSError as exc:
        raise InputFileError(path, None, f"cannot open ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket or special file"
        )
        raise InputFileError(path, None, f"is {kind}; only regular files are read")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd, st


def read_user_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` bytes (InputFileError otherwise).

    Reads at most ``max_bytes + 1`` bytes whatever the file claims, so it is bounded even
    for a file that grows while it is read."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_bytes:
            raise InputFileError(path, None, f"file is {st.st_size} bytes, larger than the limit of {max_bytes} bytes")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputFileError(path, None, f"file is larger than the limit of {max_bytes} bytes")
    return data


# ---- decoding -----------------------------------------------------------------------
def _utf8_problem(data: bytes) -> tuple[int, str] | None:
    """None when ``data`` is UTF-8, else ``(line, message)``: the 1-based line of the first bad
    byte within ``data`` and a message naming its column."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        col = data.rfind(b"\n", 0, exc.start) + 1
        return (
            data.count(b"\n", 0, exc.start) + 1,
            f"not UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start - col + 1}); save the file as UTF-8",
        )
    return None


def _json_problem(data: bytes, exc: Exception) -> str:
    """Why ``data`` (one line or document, BOM already removed) is not JSON."""
    bad = _utf8_problem(data)
    if bad is not None:
        return bad[1]
    if b"\r" in data.rstrip(b"\r\n"):
        return (
            "several records separated by a bare carriage return (CR-only line endings); "
            "convert the file to LF line endings (e.g. tr '\\r' '\\n')"
        )
    return f"invalid JSON ({exc})"


def non_utf8_error(path: str | os.PathLike) -> InputFileError:
    """The ``path:line: not UTF-8 ...`` error of the first line of ``path`` that is not UTF-8
    (for readers that decode in chunks and so cannot tell the line themselves)."""
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            bad = _utf8_problem(line.removeprefix(BOM) if lineno == 1 else line)
            if bad is not None:
                return InputFileError(path, lineno, bad[1])
    return InputFileError(path, None, "not UTF-8; save the file as UTF-8")


def loads_line(line: bytes, *, first: bool = False) -> Any:
    """``orjson.loads`` of one line; the first line of a file may start with a UTF-8 BOM."""
    if first and line.startswith(BOM):
        line = line[len(BOM) :]
    return orjson.loads(line)


def iter_json_lines(
    path: str | os.PathLike,
    *,
    on_error: str = "raise",
    error: type[InputFileError] = InputFileError,
    warning: type[Warning] = InputFileWarning,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of a JSONL file, streaming.

    Memory stays bounded by the longest line. A bad line (not UTF-8, not JSON, the
    unterminated last line of an interrupted writer, CR-separated records) is reported as
    ``path:line: what`` with ``error`` (``on_error="raise"``) or skipped with a ``warning``."""
    check_on_error(on_error)
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        for lineno, line in enumerate(f, start=1):  # binary iteration splits at b"\n" only
            if lineno == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.endswith(b"\n") and _utf8_problem(line) is None and b"\r" not in line.rstrip(b"\r"):
                    msg = f"truncated last line ({len(line)} bytes, no newline; the writer was interrupted?)"
                else:
                    msg = _json_problem(line, exc)
                report(path, lineno, msg, on_error, error=error, warning=warning)
                continue
            yield lineno, value


def parse_json_document(data: bytes, path: str | os.PathLike) -> Any:
    """One JSON document from ``data`` (BOM accepted); InputFileError naming path:line."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    if not data.strip():
        raise InputFileError(path, None, "file is empty")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        bad = _utf8_problem(data)
        if bad is not None:
            raise InputFileError(path, *bad) from None
        pos = getattr(exc, "pos", None)
        line = data[:pos].count(b"\n") + 1 if isinstance(pos, int) else None
        raise InputFileError(path, line, f"not valid JSON ({exc})") from None


def read_json_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """One JSON document from a regular file of at most ``max_bytes`` bytes."""
    return parse_json_document(read_user_file(path, max_bytes), path)


# ---- typed fields of parsed JSON ----------------------------------------------------
def json_bool(value: Any) -> bool | None:
    """A JSON boolean (or the ints 0/1) as a bool; None for anything else (e.g. ``"false"``)."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    return None


def is_number(value: Any) -> bool:
    """A JSON number (int or float), not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number that is finite as a float (an int beyond the float range is not)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_int(value: Any) -> bool:
    """A JSON integer, not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def bad_field(
    where: str | os.PathLike, field: str, value: Any, allowed: str, line: int | None = None
) -> InputFileError:
    """``InputFileError("<where>[:<line>]: field '<field>': must be <allowed>, got <value>")``
    (the value's repr cut to 80 characters)."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InputFileError(where, line, f"field {field!r}: must be {allowed}, got {shown}")


# ---- outputs versus inputs ----------------------------------------------------------
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: ``os.path.samefile`` (hard links, symlinks) when
    both exist, else the same resolved path (symlinks in the parents followed)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def refuse_overwrite(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], *, option: str = "-o/--output"
) -> None:
    """ValueError when ``output`` is one of ``inputs`` (symlinks and hard links included)."""
    for inp in inputs:
        if inp is not None and same_file(output, inp):
            raise ValueError(
                f"{output}: the output would overwrite the input {inp} (same file); "
                f"choose another {option}; nothing was written"
            )


def distinct_inputs(paths: Iterable[str | os.PathLike]) -> None:
    """ValueError when one file is given twice (its records would count twice)."""
    seen: list[str | os.PathLike] = []
    for p in paths:
        for q in seen:
            if same_file(p, q):
                raise ValueError(f"{p}: given twice (the same file as {q}); every record would count twice")
        seen.append(p)


# ---- writing ------------------------------------------------------------------------
@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``final`` to fill; on success it replaces ``final``
    (rename), on any error it is removed, so ``final`` is never seen half-written."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- CLI ----------------------------------------------------------------------------
def cli_errors(fn: Callable) -> Callable:
    """Decorator for click commands: a ValueError/OSError becomes one line ``Error: ...`` on
    stderr and exit status 2 (bad input, like a bad command line), never a traceback."""
    import click

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, OSError) as exc:
            err = click.ClickException(str(exc))
            err.exit_code = 2
            raise err from None

    return wrapper
