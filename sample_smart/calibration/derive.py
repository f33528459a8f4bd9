"""From a grid and a fit to decoder settings, and the calibration file a decoder loads.

Decoders (arXiv 2510.05987, section 4):

- Calibrated-TopK at threshold c: in p_max bin m keep the top K_m tokens,
  K_m = max{r in 1..R : c(m, r) >= c}, at least 1 (1 = greedy); a bin with fewer than
  ``min_samples`` positions gets K_m = 1 (too little evidence to sample there). The list
  runs **highest bin first** (index 0 = p_max in [0.9, 1.0]), as ``dynamic_top_k`` and
  the reference scripts' ``--dynamic-top-k`` expect.
- Calibrated-epsilon at c_min with a fit c = b^A p^B: keep tokens with b^A p^B >= c_min,
  i.e. decoder knobs ``cal_acc = [A, B, c_min]`` and ``cal_acc_base = b``.
- Equivalent epsilon: with B > 0 that rule is epsilon sampling with
  eps = b^((log_b c_min - A) / B), the smallest probability whose predicted correctness
  reaches c_min (eps > 1 means only the argmax survives, which is never removed).

The calibration file (schema ``sample_smart.calibration/1``) is self-describing: log
base, bins, the distribution it was measured on, its source traces, the full grid, the
fit, the default thresholds and the decoder settings derived at those defaults.
``load_decoder_settings`` turns it into a ``DecodeConfig.from_dict`` dict
(``decoder_settings_from_dict`` does the same for a file already read and parsed, e.g.
calibrations loaded once when a server starts).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sample_smart.io_checks import CALIBRATION_MAX_BYTES, bad_field, is_finite_number, is_int

from ._io import read_json, write_json
from .grid import BIN_EDGES, BIN_RULE, DISTRIBUTION, GRID_SCHEMA, CalibrationGrid, check_bins
from .powerlaw import PowerLawFit, _check_threshold, ln_base, normalize_base, to_log

CALIBRATION_SCHEMA = "sample_smart.calibration/1"
DEFAULT_MIN_SAMPLES = 50
DEFAULT_TOPK_THRESHOLD = 0.05
MODES = ("topk", "epsilon")


def calibrated_topk(grid: CalibrationGrid, threshold: float, min_samples: int = DEFAULT_MIN_SAMPLES) -> list[int]:
    """Calibrated-TopK list, highest p_max bin first: K_m = max{r : c(m, r) >= threshold}, >= 1."""
    _check_threshold(threshold)
    if not isinstance(min_samples, (int, np.integer)) or min_samples < 0:
        raise ValueError(f"min_samples must be an integer >= 0, got {min_samples!r}")
    c = grid.c
    ks = []
    for m in range(c.shape[0]):
        if grid.counts[m] < max(min_samples, 1):
            ks.append(1)
            continue
        ranks = np.flatnonzero(c[m] >= threshold) + 1
        ks.append(int(ranks.max()) if ranks.size else 1)
    return ks[::-1]


def calibrated_epsilon(fit: PowerLawFit, c_min: float) -> dict:
    """Decoder knobs of Calibrated-epsilon: ``{"cal_acc": [A, B, c_min], "cal_acc_base": b}``."""
    _check_threshold(c_min)
    if not fit.B > 0:
        raise ValueError(f"Calibrated-epsilon needs an increasing law (B > 0); this fit has B = {fit.B:.4g}")
    return {"cal_acc": [float(fit.A), float(fit.B), float(c_min)], "cal_acc_base": fit.base}


def equivalent_epsilon(fit: PowerLawFit, c_min: float) -> float:
    """eps = b^((log_b c_min - A) / B): epsilon sampling that keeps the same tokens as the fit."""
    _check_threshold(c_min)
    if not fit.B > 0:
        raise ValueError(f"equivalent epsilon needs B > 0; this fit has B = {fit.B:.4g}")
    exponent = (float(to_log(c_min, fit.base)) - fit.A) / fit.B * ln_base(fit.base)
    return math.exp(min(exponent, 700.0))


def build_calibration(
    grid: CalibrationGrid,
    fit: PowerLawFit | None,
    topk_threshold: float = DEFAULT_TOPK_THRESHOLD,
    epsilon_threshold: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    grid_file: str | None = None,
) -> dict:
    """The calibration file's content (see module doc)."""
    derived: dict[str, Any] = {
        "calibrated_topk": {
            "threshold": topk_threshold,
            "min_samples": min_samples,
            "order": "highest p_max bin first (index 0 = [0.9, 1.0])",
            "dynamic_top_k": calibrated_topk(grid, topk_threshold, min_samples),
        }
    }
    if fit is not None and epsilon_threshold is not None:
        derived["calibrated_epsilon"] = {
            **calibrated_epsilon(fit, epsilon_threshold),
            "equivalent_epsilon": equivalent_epsilon(fit, epsilon_threshold),
        }
    source = dict(grid.source)
    if grid_file is not None:
        source["grid_file"] = str(grid_file)
    return {
        "schema": CALIBRATION_SCHEMA,
        "log_base": fit.base if fit is not None else None,
        "distribution": DISTRIBUTION,
        "bins": {"n_bins": len(BIN_EDGES) - 1, "edges": BIN_EDGES, "rule": BIN_RULE},
        "source": source,
        "defaults": {
            "topk_threshold": topk_threshold,
            "epsilon_threshold": epsilon_threshold,
            "min_samples": min_samples,
        },
        "fit": fit.to_dict() if fit is not None else None,
        "derived": derived,
        "grid": grid.to_dict(),
    }


def save_calibration(path: str | Path, calibration: Mapping[str, Any]) -> Path:
    return write_json(path, calibration)


def calibration_from_dict(data: Any, source: str = "calibration") -> tuple[CalibrationGrid, PowerLawFit | None, dict]:
    """Validate a parsed calibration file (or bare grid file): ``(grid, fit or None, defaults)``.

    Every field used is checked for type and shape; a bad one raises ValueError naming
    ``source`` (the file, or a calibration's name) and the field, never AttributeError,
    KeyError or TypeError. ``defaults``: ``topk_threshold`` / ``epsilon_threshold`` null or
    in (0, 1], ``min_samples`` an int >= 0."""
    where = str(source)
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema == GRID_SCHEMA:
        return CalibrationGrid.from_dict(data, where), None, {}
    if schema != CALIBRATION_SCHEMA:
        raise ValueError(
            f"{where}: not a calibration file (schema {schema!r:.80}; expected {CALIBRATION_SCHEMA!r} "
            f"or a grid {GRID_SCHEMA!r})"
        )
    if data.get("grid") is None:
        raise ValueError(f"{where}: calibration file lacks the 'grid' field")
    check_bins(data.get("bins"), where)
    grid = CalibrationGrid.from_dict(data["grid"], f"{where}: grid")
    fit = PowerLawFit.from_dict(data["fit"], f"{where}: fit") if data.get("fit") is not None else None
    log_base = data.get("log_base")
    if log_base is not None:
        try:
            log_base = normalize_base(log_base)
        except ValueError:
            raise bad_field(where, "log_base", log_base, "'e', 10 or null") from None
        if fit is not None and log_base != fit.base:
            raise ValueError(f"{where}: log_base {data['log_base']!r} disagrees with the fit's base {fit.base!r}")
    defaults = data.get("defaults")
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, Mapping):
        raise bad_field(where, "defaults", defaults, "an object")
    for key in ("topk_threshold", "epsilon_threshold"):
        c = defaults.get(key)
        if c is not None and not (is_finite_number(c) and 0.0 < c <= 1.0):
            raise bad_field(where, f"defaults.{key}", c, "a number in (0, 1] or null")
    m = defaults.get("min_samples")
    if m is not None and not (is_int(m) and m >= 0):
        raise bad_field(where, "defaults.min_samples", m, "an int >= 0")
    return grid, fit, dict(defaults)


def load_calibration(path: str | Path) -> tuple[CalibrationGrid, PowerLawFit | None, dict]:
    """Read a calibration file (or a bare grid file): (grid, fit or None, defaults).

    The file must be a regular file of at most ``CALIBRATION_MAX_BYTES`` (16 MiB)."""
    return calibration_from_dict(read_json(path, CALIBRATION_MAX_BYTES), str(path))


def _check_mode(mode: Any, threshold: Any) -> None:
    if mode not in MODES:
        raise ValueError(f"calibration mode must be one of {', '.join(MODES)}; got {mode!r:.80}")
    if threshold is not None and not (is_finite_number(threshold) and 0.0 < threshold <= 1.0):
        raise ValueError(f"calibration threshold must be a number in (0, 1], got {threshold!r:.80}")


def decoder_settings_from_dict(
    data: Any, mode: str, threshold: float | None = None, *, source: str = "calibration"
) -> dict:
    """Decoder settings from an already parsed calibration file (``load_decoder_settings``
    without the file system): validate ``data`` (see ``calibration_from_dict``) and derive
    the ``DecodeConfig.from_dict`` dict for ``mode`` at ``threshold``. Errors are ValueErrors
    naming ``source`` and the field."""
    _check_mode(mode, threshold)
    return derive_decoder_settings(calibration_from_dict(data, source), mode, threshold, source=source)


def derive_decoder_settings(
    calibration: tuple[CalibrationGrid, PowerLawFit | None, Mapping[str, Any]],
    mode: str,
    threshold: float | None = None,
    *,
    source: str = "calibration",
) -> dict:
    """The settings of ``decoder_settings_from_dict`` from an already validated
    ``calibration_from_dict(...)`` triple (no re-validation of the grid: for a server that
    validates its calibrations once at start-up and derives settings per request)."""
    _check_mode(mode, threshold)
    grid, fit, defaults = calibration
    key = "topk_threshold" if mode == "topk" else "epsilon_threshold"
    if threshold is None:
        threshold = defaults.get(key)
        if threshold is None:
            raise ValueError(f"{source}: no threshold given and the file has no default {key!r}")
    if mode == "topk":
        min_samples = defaults.get("min_samples")
        return {
            "dynamic_top_k": calibrated_topk(
                grid, threshold, DEFAULT_MIN_SAMPLES if min_samples is None else min_samples
            )
        }
    if fit is None:
        raise ValueError(f"{source}: mode 'epsilon' needs a power-law fit; the file has none (run `calibrate fit`)")
    try:
        return calibrated_epsilon(fit, threshold)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_decoder_settings(path: str | Path, mode: str, threshold: float | None = None) -> dict:
    """Decoder settings from a calibration file, as a ``DecodeConfig.from_dict`` dict.

    mode "topk": ``{"dynamic_top_k": [10 ints, highest bin first]}`` at ``threshold`` c
    (default: the file's ``defaults.topk_threshold``); mode "epsilon":
    ``{"cal_acc": [A, B, c_min], "cal_acc_base": "e" | 10}`` at ``threshold`` c_min
    (default: the file's ``defaults.epsilon_threshold``). The file is read with
    ``sample_smart.io_checks.read_user_file``: regular files only (no FIFO, device or
    directory), at most ``CALIBRATION_MAX_BYTES`` (16 MiB). ValueError naming the file (and
    the field) on an unknown mode, a threshold outside (0, 1], an unreadable, oversized or
    malformed file, or a field of the wrong type.
    """
    from .bucket_decoder import decoder_settings, is_bucket_file  # `calibrate critic` files: kind critic_buckets

    if is_bucket_file(path):
        return decoder_settings(path, mode, threshold)
    _check_mode(mode, threshold)
    return decoder_settings_from_dict(read_json(path, CALIBRATION_MAX_BYTES), mode, threshold, source=str(path))
