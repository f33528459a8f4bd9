"""Critic bucket files (100 buckets of a critic's score), their merge, and the decoder they give.

A critic calibration (``sample-smart calibrate critic``, :mod:`sample_smart.traces.critic`)
draws one token per supervised position from the model's raw softmax and scores it with a
critic; the pairs (score, sampled == gold) go into 100 buckets of width 0.01,
bucket k = min(floor(100 * score), 99) = [k/100, (k+1)/100) (bucket 99 includes 1.0), as
:mod:`sample_smart.calibration.buckets`. Two files come out:

* the **values file**: a JSON array of exactly 100 probabilities, bucket k's empirical
  accuracy with empty buckets filled by the rule of ``buckets.fill_empty`` (nearest
  populated bucket toward 0.5);
* the **counts file** (``<values stem>.counts.json``, ``kind = "sample_smart.critic_buckets/1"``),
  self-describing: what was sampled (distribution, temperature, sampler, seed), the critic,
  model and data, and per bucket the count, the number correct and the sum of the scores,
  from which everything else is recomputed (so runs merge by adding counts: ``merge``).

The decoder. A bucket calibration of the critic ``p_sampled`` (the model's own raw
probability of a token, at the prefix where it is chosen) estimates
c(p) = P(token is right | its probability p). Made monotone first (``isotonic``: weighted
pool-adjacent-violators over the populated buckets, weights = counts, non-decreasing in k),
the set {p : c_iso(p) >= c} is an upper interval of probabilities, i.e. epsilon sampling
(Hewitt et al. 2022, the paper's Calibrated-epsilon idea, arXiv 2510.05987 section 4) with

    eps(c) = min{ k / 100 : c_iso(bucket k) >= c }        (a bucket lower edge, probability units)

(no bucket reaching c: eps = 1, only the argmax survives, which is never removed). For the
critic ``p_max`` the buckets estimate P(a token sampled from the raw distribution is right |
p_max), which thresholds the row's top probability rather than each token's: that gives
Greedy-Threshold (``greedy_threshold = t``, sample when p_max >= t, argmax otherwise) with
t = the same smallest edge. Other critics (a second model, or scores on the sampled sequence
with ``--on-sampled``) do not score the token's probability under the decoding model and
cannot be turned into a decoder: ``decoder_settings`` refuses them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sample_smart.io_checks import CALIBRATION_MAX_BYTES

from ._io import read_json, write_json
from .buckets import N_BUCKETS, fill_empty

KIND = "sample_smart.critic_buckets/1"
BUCKET_RULE = f"bucket k = min(floor({N_BUCKETS} * score), {N_BUCKETS - 1}) covers [k/100, (k+1)/100); 99 includes 1.0"
UNITS = "score = a probability in [0, 1] (not a log); bucket edges k/100, k = 0..100"
ISOTONIC_RULE = (
    "isotonic (non-decreasing in k) fit of the populated buckets' accuracies by weighted "
    "pool-adjacent-violators, weights = bucket counts; an empty bucket takes the isotonic value of the "
    "nearest populated bucket below it (above it, for buckets below the first populated one)"
)
DECODER_CRITICS = {"p_sampled": "epsilon", "p_max": "greedy_threshold"}
# the keys a run writes that must agree for counts to be added
_MERGE_KEYS = ("sampled_from", "critic", "n_buckets")


def counts_path(values_path: str | Path) -> Path:
    """The counts file beside a values file: ``x.json`` -> ``x.counts.json``."""
    p = Path(values_path)
    return p.with_name(p.stem + ".counts.json") if not p.name.endswith(".counts.json") else p


def isotonic(values: Any, weights: Any) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing sequence minimising
    sum_k w_k (y_k - f_k)^2 over the buckets with w_k > 0; the others as ``ISOTONIC_RULE``."""
    y = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    idx = np.flatnonzero(w > 0)
    if idx.size == 0:
        raise ValueError("isotonic fit needs at least one populated bucket")
    blocks: list[list[float]] = []  # [weighted mean, weight, number of buckets]
    for k in idx:
        blocks.append([y[k], w[k], 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    fitted = np.repeat([b[0] for b in blocks], [b[2] for b in blocks])
    out = np.empty_like(y)
    below = np.searchsorted(idx, np.arange(y.shape[0]), side="right") - 1  # last populated index <= k
    out[:] = fitted[np.maximum(below, 0)]
    return out


def summarize(counts: Any, correct: Any, score_sums: Any) -> dict:
    """Everything derived from the per-bucket sums: accuracies, filled values (fill rule of
    ``buckets``), isotonic values, overall accuracy from the buckets, ECE and MCE over the
    100 buckets (ECE = sum_b n_b / N |acc_b - mean score_b|, MCE = max over populated b)."""
    n = np.asarray(counts, dtype=np.int64)
    k = np.asarray(correct, dtype=np.int64)
    s = np.asarray(score_sums, dtype=np.float64)
    if not (n.shape == k.shape == s.shape == (N_BUCKETS,)):
        raise ValueError(f"counts, correct and score sums must each have {N_BUCKETS} entries")
    if (n < 0).any() or (k < 0).any() or (k > n).any():
        raise ValueError("bucket counts must satisfy 0 <= correct <= count")
    populated = n > 0
    if not populated.any():
        raise ValueError("no supervised position was scored: every bucket is empty")
    acc = np.where(populated, k / np.maximum(n, 1), np.nan)
    mean_score = np.where(populated, s / np.maximum(n, 1), np.nan)
    gaps = np.abs(acc - mean_score)[populated]
    total = int(n.sum())
    return {
        "n_positions": total,
        "populated_buckets": int(populated.sum()),
        "accuracy": [None if math.isnan(a) else float(a) for a in acc],
        "mean_score": [None if math.isnan(a) else float(a) for a in mean_score],
        "filled": [float(v) for v in fill_empty(np.nan_to_num(acc), populated)],
        "isotonic": [float(v) for v in isotonic(np.nan_to_num(acc), n)],
        "overall_accuracy_buckets": float(k.sum() / total),
        "ece": float((n[populated] / total * gaps).sum()),
        "mce": float(gaps.max()),
    }


def build_counts_file(
    meta: Mapping[str, Any],
    counts: Any,
    correct: Any,
    score_sums: Any,
    overall_accuracy_samples: float | None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The counts file's content (module doc); checks the two overall accuracies agree."""
    derived = summarize(counts, correct, score_sums)
    if overall_accuracy_samples is not None and not math.isclose(
        overall_accuracy_samples, derived["overall_accuracy_buckets"], rel_tol=1e-9, abs_tol=1e-12
    ):
        raise RuntimeError(
            f"overall accuracy from the samples ({overall_accuracy_samples}) and from the bucket "
            f"counts ({derived['overall_accuracy_buckets']}) disagree"
        )
    return {
        "kind": KIND,
        **dict(meta),
        "n_buckets": N_BUCKETS,
        "bucket_rule": BUCKET_RULE,
        "units": UNITS,
        "fill_rule": (
            "empty bucket = value of the nearest populated bucket toward 0.5 (sample_smart.calibration.buckets)"
        ),
        "isotonic_rule": ISOTONIC_RULE,
        "overall_accuracy_samples": overall_accuracy_samples,
        **dict(extra or {}),
        "counts": [int(v) for v in np.asarray(counts)],
        "correct": [int(v) for v in np.asarray(correct)],
        "score_sums": [float(v) for v in np.asarray(score_sums)],
        **derived,
    }


def write_calibration(values_path: str | Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write the counts file, then the values file (the 100 filled values): (values, counts)."""
    values_path = Path(values_path)
    cpath = counts_path(values_path)
    if cpath == values_path:
        raise ValueError(f"{values_path}: the values file must not end in .counts.json (that name is the counts file)")
    write_json(cpath, {**data, "values_file": values_path.name})
    write_json(values_path, data["filled"])
    return values_path, cpath


def _check_list(data: Mapping[str, Any], key: str, where: str, kind: type) -> np.ndarray:
    v = data.get(key)
    if (
        not isinstance(v, list)
        or len(v) != N_BUCKETS
        or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and (kind is float or float(x).is_integer())
            for x in v
        )
    ):
        raise ValueError(f"{where}: field {key!r} must be a list of {N_BUCKETS} numbers")
    return np.asarray(v, dtype=np.float64 if kind is float else np.int64)


def load_counts(path: str | Path) -> dict:
    """Read a counts file (or a values file whose counts file sits beside it) and check it."""
    path = Path(path)
    data = read_json(path, CALIBRATION_MAX_BYTES)
    if isinstance(data, list):
        side = counts_path(path)
        if not side.is_file():
            raise ValueError(
                f"{path}: a bare list of {len(data)} values says nothing about its critic or "
                f"distribution; its counts file {side} is missing"
            )
        path, data = side, read_json(side, CALIBRATION_MAX_BYTES)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not a critic bucket file (kind {got!r}; expected {KIND!r})")
    for key in _MERGE_KEYS:
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}")
    if data["n_buckets"] != N_BUCKETS:
        raise ValueError(f"{path}: n_buckets must be {N_BUCKETS}, got {data['n_buckets']!r}")
    n = _check_list(data, "counts", str(path), int)
    k = _check_list(data, "correct", str(path), int)
    s = _check_list(data, "score_sums", str(path), float)
    out = dict(data)
    out.update(summarize(n, k, s))  # recomputed, so an edited file cannot disagree with its counts
    out["counts"], out["correct"], out["score_sums"] = n.tolist(), k.tolist(), s.tolist()
    out["_path"] = str(path)
    return out


def is_bucket_file(path: str | Path) -> bool:
    """True when ``path`` is a critic counts file, or a values list with a counts file beside it."""
    try:
        data = read_json(path, CALIBRATION_MAX_BYTES)
    except ValueError:
        return False
    if isinstance(data, list):
        return counts_path(path).is_file() and counts_path(path) != Path(path)
    return isinstance(data, dict) and data.get("kind") == KIND


def merge(paths: list[str | Path]) -> dict:
    """Add the counts of several runs with the same distribution, critic and buckets."""
    if not paths:
        raise ValueError("merge needs at least one counts file")
    files = [load_counts(p) for p in paths]
    first = files[0]
    for f in files[1:]:
        for key in _MERGE_KEYS:
            if f[key] != first[key]:
                raise ValueError(
                    f"{f['_path']}: {key} {f[key]!r} differs from {first['_path']}'s {first[key]!r}; "
                    "only runs with the same sampled distribution and critic merge"
                )
    n = sum(np.asarray(f["counts"], dtype=np.int64) for f in files)
    k = sum(np.asarray(f["correct"], dtype=np.int64) for f in files)
    s = sum(np.asarray(f["score_sums"], dtype=np.float64) for f in files)
    runs = [r for f in files for r in (f.get("runs") or [])]
    meta = {key: first[key] for key in _MERGE_KEYS if key != "n_buckets"}
    return build_counts_file(
        {**meta, "merged_from": [f["_path"] for f in files], "runs": runs}, n, k, s, overall_accuracy_samples=None
    )


def smallest_edge(iso: Any, threshold: float) -> float:
    """min{k/100 : iso[k] >= threshold}, or 1.0 when no bucket reaches it."""
    hits = np.flatnonzero(np.asarray(iso) >= threshold)
    return float(hits[0]) / N_BUCKETS if hits.size else 1.0


def decoder_settings(path: str | Path, mode: str, threshold: float | None) -> dict:
    """``DecodeConfig.from_dict`` settings from a critic bucket file (module doc).

    mode "epsilon" (critic ``p_sampled``): ``{"prob_threshold": eps(c)}``; mode
    "greedy_threshold" (critic ``p_max``): ``{"greedy_threshold": t(c)}``. ``threshold`` c is a
    calibrated probability of correctness in (0, 1] and is required (the file has no default)."""
    data = load_counts(path)
    where = data["_path"]
    critic = data["critic"] if isinstance(data["critic"], dict) else {}
    name = critic.get("name")
    if name not in DECODER_CRITICS or critic.get("prefix") != "gold":
        raise ValueError(
            f"{where}: the critic {name!r} (prefix {critic.get('prefix')!r}) does not score the token's own "
            f"probability under the decoding model; only {', '.join(DECODER_CRITICS)} on the gold prefix give a "
            "decoder"
        )
    wanted = DECODER_CRITICS[name]
    if mode != wanted:
        raise ValueError(
            f"{where}: a {name!r} bucket calibration gives mode {wanted!r} "
            f"({'epsilon: keep p >= eps' if wanted == 'epsilon' else 'Greedy-Threshold on p_max'}); "
            f"got mode {mode!r}"
        )
    if threshold is None:
        raise ValueError(f"{where}: a critic bucket file has no default threshold; pass one in (0, 1]")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be a calibrated probability in (0, 1], got {threshold!r}")
    edge = smallest_edge(data["isotonic"], float(threshold))
    return {"prob_threshold": edge} if wanted == "epsilon" else {"greedy_threshold": edge}
