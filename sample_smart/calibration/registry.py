"""Calibrations a server loads once at start-up, which requests then name (never a path).

A request that could make the server open a path of its choosing could read without bound
(``/dev/zero``), block the engine forever (a FIFO) or learn from the error text whether a file
exists. So a serving process (the vLLM processor, and the OpenAI-compatible server's admission
check) never opens a path a request names: the operator lists the calibrations when the server
starts, they are read and validated **once**, and a request picks one by its **name**::

    SAMPLE_SMART_CALIBRATIONS=gsm8k=/srv/cal/gsm8k.json,math=/srv/cal/math.json  vllm serve ...
    SAMPLE_SMART_CALIBRATIONS=/srv/cal/   # every *.json in the folder, named by its file stem

    "vllm_xargs": {"calibration": "gsm8k"}
    "vllm_xargs": {"sample_smart":
                   "{\\"calibration\\": {\\"name\\": \\"gsm8k\\", \\"mode\\": \\"topk\\", \\"threshold\\": 0.1}}"}

A name is 1-64 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit. A request naming
an unknown calibration is refused with a message that lists the served names and says nothing
about the file system. A bad file, or a bad specification, stops the server at start-up instead.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "CalibrationFiles", "CalibrationRegistry", "served_calibrations"]

ENV_VAR = "SAMPLE_SMART_CALIBRATIONS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CACHE_SIZE = 1024  # derived settings per (name, mode, threshold) kept in memory


class CalibrationFiles:
    """The offline resolver of ``calibration`` settings: a **path** names a calibration file, read
    with the library's safe reader (regular files only, ``CALIBRATION_MAX_BYTES``) each time.

    It is what ``DecodeConfig.from_dict(d)`` uses when no resolver is given: scripts, the CLI,
    ``sampling_params`` for an offline ``vllm.LLM``. A server passes its :class:`CalibrationRegistry`
    instead, so a client's value is only ever a name."""

    key = "path"  # what a ``calibration`` setting's value names

    def settings(self, path: Any, mode: str = "epsilon", threshold: float | None = None) -> dict:
        from sample_smart.calibration.derive import load_decoder_settings
        from sample_smart.describe import describe

        try:
            return dict(load_decoder_settings(path, mode, threshold))
        except (OSError, ValueError) as exc:
            raise ValueError(f"calibration={describe(path)} could not be loaded: {exc}") from exc


class CalibrationRegistry:
    """Named calibrations, each read and validated once; ``settings(name, mode, threshold)`` derives
    a request's decoder settings from the data in memory (cached), never touching the disk."""

    key = "name"  # what a ``calibration`` setting's value names

    def __init__(self, data: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._data: dict[str, tuple] = {}  # name -> validated (grid, fit, defaults)
        for name, calibration in (data or {}).items():
            self.add(name, calibration)
        self._settings = functools.lru_cache(maxsize=_CACHE_SIZE)(self._derive)

    # -- building ---------------------------------------------------------------------
    def add(self, name: str, calibration: Mapping[str, Any], source: str | None = None) -> None:
        """Add a parsed calibration under ``name`` after checking that both of its decoders derive."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"calibration name {name!r} is invalid: allowed 1-64 characters of "
                "[A-Za-z0-9_.-] starting with a letter or digit"
            )
        if name in self._data:
            raise ValueError(f"calibration name {name!r} is given twice")
        from sample_smart.calibration.derive import calibration_from_dict

        self._data[name] = calibration_from_dict(calibration, source or name)  # checked once, at start-up

    @classmethod
    def from_spec(cls, spec: str) -> "CalibrationRegistry":
        """``"name=path,name=path"``, a folder (every ``*.json`` in it, named by file stem) or one
        file (named by its stem). Files are read with the library's safe reader (regular files
        only, size limit). ValueError naming the entry on any problem."""
        from sample_smart.calibration._io import read_json
        from sample_smart.io_checks import CALIBRATION_MAX_BYTES

        registry = cls()
        spec = spec.strip()
        if not spec:
            return registry
        entries: list[tuple[str, Path]] = []
        if "=" in spec:
            for item in spec.split(","):
                name, sep, path = item.partition("=")
                if not sep or not name.strip() or not path.strip():
                    raise ValueError(f"{ENV_VAR}: entry {item!r} is not name=path")
                entries.append((name.strip(), Path(path.strip()).expanduser()))
        else:
            root = Path(spec).expanduser()
            if root.is_dir():
                entries = [(p.stem, p) for p in sorted(root.glob("*.json"))]
                if not entries:
                    raise ValueError(f"{ENV_VAR}: folder {root} holds no *.json calibration file")
            else:
                entries = [(root.stem, root)]
        for name, path in entries:
            try:
                registry.add(name, read_json(path, CALIBRATION_MAX_BYTES), source=str(path))
            except ValueError as exc:
                raise ValueError(f"{ENV_VAR}: calibration {name!r}: {exc}") from None
        return registry

    # -- use --------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __len__(self) -> int:
        return len(self._data)

    def settings(self, name: Any, mode: str = "epsilon", threshold: float | None = None) -> dict:
        """The ``DecodeConfig.from_dict`` settings of calibration ``name`` (a copy)."""
        if not isinstance(name, str) or name not in self._data:
            from sample_smart.describe import describe

            served = (
                ", ".join(self.names)
                if self._data
                else (f"none (the operator lists them in {ENV_VAR} when the server starts)")
            )
            raise ValueError(
                f"calibration={describe(name)} is invalid: unknown calibration name; this server serves: {served}"
            )
        return dict(self._settings(name, mode, threshold))

    def _derive(self, name: str, mode: str, threshold: float | None) -> dict:
        from sample_smart.calibration.derive import derive_decoder_settings

        return derive_decoder_settings(self._data[name], mode, threshold, source=f"calibration {name!r}")


@functools.lru_cache(maxsize=1)
def _registry_for(spec: str) -> CalibrationRegistry:
    return CalibrationRegistry.from_spec(spec)


def served_calibrations() -> CalibrationRegistry:
    """The calibrations named by ``$SAMPLE_SMART_CALIBRATIONS`` (empty when unset), read once per
    process and value of the variable."""
    return _registry_for(os.environ.get(ENV_VAR, ""))
