"""Confidence calibration in 100 buckets, and calibration errors (ECE, MCE, adaptive ECE).

Input: pairs (confidence in [0, 1], correct in {0, 1}) as arrays (files of pairs are read by
:func:`sample_smart.calibration.pairs.read_pairs`).

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

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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
