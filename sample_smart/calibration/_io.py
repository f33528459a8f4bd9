"""Small JSON helpers for calibration files: atomic writes, clear read errors."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from sample_smart.io_checks import DEFAULT_MAX_BYTES, read_json_file


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (a temporary sibling renamed at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(data), fh, indent=1, allow_nan=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a calibration file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Read a JSON file (``sample_smart.io_checks.read_json_file``: a regular file of at most
    ``max_bytes``, UTF-8 with an optional BOM); ValueError naming the file (and line) for a
    missing, empty, oversized, non-UTF-8 or malformed file."""
    return read_json_file(path, max_bytes)
