"""Files of (confidence, correct) pairs for :mod:`~sample_smart.calibration.buckets`: a JSONL file of
``{"confidence": float, "correct": bool}`` lines, or a CSV with columns ``confidence`` and
``correct`` (``correct``: a boolean, 1/0, or in CSV the words true/false, yes/no)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.io_checks import BOM, InputFileError, iter_json_lines, non_utf8_error, open_regular

__all__ = ["read_pairs"]


_TRUE = {"true", "1", "1.0", "yes"}
_FALSE = {"false", "0", "0.0", "no"}


def _parse_correct(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{where}: 'correct' must be a boolean (true/false or 1/0), got {value!r}")


def _parse_confidence(value: Any, where: str) -> float:
    try:
        conf = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: 'confidence' must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not (0.0 <= conf <= 1.0):
        raise ValueError(f"{where}: 'confidence' must be a number in [0, 1], got {value!r}")
    return conf


def _sniff(path: Path) -> str:
    """ "jsonl" when the first non-blank byte of the file is ``{``, else "csv"."""
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(4096)
    return "jsonl" if head.removeprefix(BOM).lstrip().startswith(b"{") else "csv"


def read_pairs(path: str | Path, fmt: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Read (confidence, correct) from JSONL or CSV (``fmt`` "jsonl", "csv" or "auto" by suffix/content).

    Streamed with the shared readers of ``sample_smart.io_checks`` (regular files, UTF-8
    with an optional BOM, lines end at ``\\n``; in CSV, quoted fields may hold newlines);
    a bad line raises ValueError ``path:line: what``."""
    path = Path(path)
    if fmt not in ("auto", "jsonl", "csv"):
        raise ValueError(f"pairs format must be 'jsonl', 'csv' or 'auto', got {fmt!r}")
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = "csv" if suffix == ".csv" else "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else _sniff(path)
    conf: list[float] = []
    corr: list[bool] = []
    if fmt == "jsonl":
        for lineno, obj in iter_json_lines(path):
            where = f"{path}:{lineno}"
            if not isinstance(obj, dict) or "confidence" not in obj or "correct" not in obj:
                raise ValueError(f"{where}: expected an object with 'confidence' and 'correct'")
            conf.append(_parse_confidence(obj["confidence"], where))
            corr.append(_parse_correct(obj["correct"], where))
    else:
        fd, _ = open_regular(path)
        with io.TextIOWrapper(os.fdopen(fd, "rb"), encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            try:
                fields = [f.strip() for f in (reader.fieldnames or [])]
                if "confidence" not in fields or "correct" not in fields:
                    raise ValueError(
                        f"{path}: CSV needs a header with columns 'confidence' and 'correct', got {fields}"
                    )
                reader.fieldnames = fields
                for row in reader:
                    where = f"{path}:{reader.line_num}"
                    conf.append(_parse_confidence(row["confidence"], where))
                    corr.append(_parse_correct(row["correct"], where))
            except UnicodeDecodeError:
                raise non_utf8_error(path) from None
            except csv.Error as exc:
                raise InputFileError(path, reader.line_num, f"bad CSV ({exc})") from None
    if not conf:
        raise ValueError(f"{path}: no (confidence, correct) pairs in the file")
    return np.asarray(conf, dtype=np.float64), np.asarray(corr, dtype=bool)
