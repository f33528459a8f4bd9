"""Confidence calibration in 100 buckets, and calibration errors (ECE, MCE, adaptive ECE).

Input: pairs (confidence in [0, 1], correct in {0, 1}) from arrays, a JSONL file of
``{"confidence": float, "correct": bool}`` lines, or a CSV with columns ``confidence``
and ``correct``.

Buckets: 100 of width 0.01, bucket k = min(floor(100 * confidence), 99), so bucket k
covers [k/100, (k+1)/100) and bucket 99 covers [0.99, 1.0]. The calibrated value of a
bucket is its empirical accuracy (correct / count).

Fill rule for empty buckets (``fill_empty``): an empty bucket copies the value of the
nearest populated bucket **in the direction of 0.5**: buckets 0..49 (centres below 0.5)
look upward (k+1, k+2, ...), buckets 50..99 (centres above 0.5) look downward. The walk
may cross 0.5. Ties: no bucket is centred on 0.5 (bucket 49 = [0.49, 0.50) looks up,
bucket 50 = [0.50, 0.51) looks down), and a one-way walk meets exactly one nearest
populated bucket, so no tie can arise. A side with no populated bucket in the direction
of 0.5 (e.g. bucket 80 when every bucket below it is empty) copies the nearest populated
bucket in the other direction. No populated bucket at all is an error.

Errors, over equal-width bins with B_b the positions in bin b, acc_b their accuracy and
conf_b their mean confidence:

    ECE = sum_b |B_b| / N * |acc_b - conf_b|      MCE = max_b |acc_b - conf_b|  (populated b)

and the adaptive (equal-mass) ECE: the positions sorted by confidence are split into
``n_bins`` groups of (nearly) equal size (``numpy.array_split``), then the ECE formula.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.io_checks import BOM, InputFileError, iter_json_lines, non_utf8_error, open_regular

N_BUCKETS = 100


def bucket_index(confidence: Any, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """min(floor(n_buckets * confidence), n_buckets - 1)."""
    conf = np.asarray(confidence, dtype=np.float64)
    return np.minimum(np.floor(conf * n_buckets), n_buckets - 1).astype(np.int64)


def validate_pairs(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Arrays (float64 confidence, float64 0/1 correct) after checking range, shape and values."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence and correct must have the same length, got {conf.shape[0]} and {corr.shape[0]}")
    if conf.shape[0] == 0:
        raise ValueError("no (confidence, correct) pairs given")
    bad = ~((conf >= 0) & (conf <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"confidence must be in [0, 1]; pair {i} has {conf[i]!r}")
    if corr.dtype == bool:
        corr = corr.astype(np.float64)
    else:
        corr = np.asarray(corr, dtype=np.float64)
        bad = ~np.isin(corr, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"correct must be a boolean (or 0/1); pair {i} has {correct[i]!r}")
    return conf, corr


def fill_empty(values: Any, populated: Any) -> np.ndarray:
    """Fill empty buckets by the rule in the module doc (nearest populated, toward 0.5)."""
    values = np.asarray(values, dtype=np.float64).copy()
    populated = np.asarray(populated, dtype=bool)
    n = values.shape[0]
    idx = np.flatnonzero(populated)
    if idx.size == 0:
        raise ValueError("cannot fill buckets: no bucket is populated")
    half = n // 2  # buckets < half have centres below 0.5
    for k in np.flatnonzero(~populated):
        up, down = idx[idx > k], idx[idx < k]
        first, second = (up[:1], down[-1:]) if k < half else (down[-1:], up[:1])
        values[k] = values[(first if first.size else second)[0]]
    return values


def _binned_error(conf: np.ndarray, corr: np.ndarray, groups: list[np.ndarray]) -> tuple[float, float]:
    n = conf.shape[0]
    gaps = [(g.size, abs(corr[g].mean() - conf[g].mean())) for g in groups if g.size]
    return float(sum(s / n * gap for s, gap in gaps)), float(max(gap for _, gap in gaps))


def ece(confidence: Any, correct: Any, n_bins: int = N_BUCKETS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins (module doc)."""
    conf, corr = validate_pairs(confidence, correct)
    b = bucket_index(conf, n_bins)
    return _binned_error(conf, corr, [np.flatnonzero(b == k) for k in range(n_bins)])[0]


def mce(confidence: Any, correct: Any, n_bins: int = N_BUCKETS) -> float:
    """Maximum calibration error over the populated ones of ``n_bins`` equal-width bins."""
    conf, corr = validate_pairs(confidence, correct)
    b = bucket_index(conf, n_bins)
    return _binned_error(conf, corr, [np.flatnonzero(b == k) for k in range(n_bins)])[1]


def adaptive_ece(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-mass bins of the confidence-sorted positions."""
    conf, corr = validate_pairs(confidence, correct)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    order = np.argsort(conf, kind="stable")
    return _binned_error(conf, corr, np.array_split(order, min(n_bins, conf.shape[0])))[0]


@dataclass
class BucketCalibrator:
    """100-bucket confidence calibration, sklearn style: ``fit(conf, correct)``, ``transform(conf)``."""

    n_buckets: int = N_BUCKETS
    adaptive_bins: int = 15

    def fit(self, confidence: Any, correct: Any) -> "BucketCalibrator":
        conf, corr = validate_pairs(confidence, correct)
        b = bucket_index(conf, self.n_buckets)
        self.counts_ = np.bincount(b, minlength=self.n_buckets)
        self.correct_ = np.bincount(b, weights=corr, minlength=self.n_buckets)
        self.confidence_sums_ = np.bincount(b, weights=conf, minlength=self.n_buckets)
        populated = self.counts_ > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            self.accuracy_ = np.where(populated, self.correct_ / np.maximum(self.counts_, 1), np.nan)
        self.filled_ = fill_empty(np.nan_to_num(self.accuracy_), populated)
        self.n_ = int(conf.shape[0])
        self.overall_accuracy_raw_ = float(corr.mean())
        self.overall_accuracy_buckets_ = float(self.correct_.sum() / self.counts_.sum())
        if not math.isclose(self.overall_accuracy_raw_, self.overall_accuracy_buckets_, rel_tol=1e-9, abs_tol=1e-12):
            raise RuntimeError(
                f"overall accuracy from pairs ({self.overall_accuracy_raw_}) and from buckets "
                f"({self.overall_accuracy_buckets_}) disagree"
            )
        self.ece_, self.mce_ = _binned_error(conf, corr, [np.flatnonzero(b == k) for k in range(self.n_buckets)])
        self.adaptive_ece_ = adaptive_ece(conf, corr, self.adaptive_bins)
        return self

    def transform(self, confidence: Any) -> np.ndarray:
        """Calibrated probability of correctness: the (filled) accuracy of each confidence's bucket."""
        conf = np.asarray(confidence, dtype=np.float64)
        if not np.all((conf >= 0) & (conf <= 1)):
            raise ValueError("confidence must be in [0, 1]")
        return self.filled_[bucket_index(conf, self.n_buckets)]

    def fit_transform(self, confidence: Any, correct: Any) -> np.ndarray:
        return self.fit(confidence, correct).transform(confidence)

    def summary(self) -> dict:
        return {
            "n_pairs": self.n_,
            "n_buckets": self.n_buckets,
            "bucket_rule": f"bucket = min(floor({self.n_buckets} * confidence), {self.n_buckets - 1})",
            "populated_buckets": int((self.counts_ > 0).sum()),
            "overall_accuracy_raw": self.overall_accuracy_raw_,
            "overall_accuracy_buckets": self.overall_accuracy_buckets_,
            "ece": self.ece_,
            "mce": self.mce_,
            "adaptive_ece": self.adaptive_ece_,
            "adaptive_bins": self.adaptive_bins,
        }


# ---- reading pairs ------------------------------------------------------------------
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
    """"jsonl" when the first non-blank byte of the file is ``{``, else "csv"."""
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
                    raise ValueError(f"{path}: CSV needs a header with columns 'confidence' and 'correct', got {fields}")
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
