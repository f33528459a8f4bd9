"""OPE estimators of a target policy's value (its accuracy) from logged records (numpy only).

Notation: n logged responses a_i ~ pi_0(. | x_i), importance weight w_i = exp(log pi(a_i|x_i) -
log pi_0(a_i|x_i)) (0 when a_i is outside pi's kept set), oracle label y_i in {0, 1}, judge score
s_i, outcome model q_i = g(s_i) (the judge, raw or calibrated). Formulas (Horvitz-Thompson 1952;
Swaminathan & Joachims 2015; Dudik et al. 2011):

    IPS(r)   = (1/n) sum_i w_i r_i
    SNIPS(r) = sum_i w_i r_i / sum_i w_i
    DM       = (1/m) sum_j q(s'_j)              over m fresh responses of pi (the --oracle draws,
                                                judged, labels unused); without fresh draws
                                                DM = SNIPS(q) on the logged responses
    DR       = DM + (1/n) sum_i w_i (y_i - q_i)

Outcome models ("variants"): ``raw`` q = s (the judge as it is); ``cal`` q = g(s), g an isotonic
regression of y on s (pool-adjacent-violators, :func:`isotonic_fit`), **cross-fitted**: prompts are
split into ``FOLDS`` folds by a hash of the prompt id (:func:`fold_of`) and each record's g is fitted
on the other folds (fresh draws use the fit on all logged records); ``cal_w`` the same fit weighted
by the judge's mass on Yes+No (the uncertainty variant: an unsure judge counts less). IPS and
SNIPS also run with r = y (``label``: the labels themselves as the reward).

Standard errors: **influence functions**, cluster-robust by prompt (responses of one prompt are
not independent): with phi_i the influence of record i and S_g the sum of phi over prompt g (G
prompts), se = sqrt(G/(G-1) sum_g S_g^2) / n; IPS phi = w r - IPS, SNIPS phi = w (r - SNIPS)/mean(w),
DR = the DM term's se (fresh draws, clustered the same way) and the residual term's, added in
quadrature (independent samples). The calibration fit's own variance is not propagated (cross-
fitting removes its overfitting bias, not its noise). 95% CI = estimate +- 1.96 se (normal).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FOLDS = 5
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float

    @property
    def ci(self) -> tuple[float, float]:
        return (self.value - Z95 * self.se, self.value + Z95 * self.se)

    def to_dict(self) -> dict[str, float | None]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        lo, hi = self.ci
        return {"estimate": num(self.value), "se": num(self.se), "ci_low": num(lo), "ci_high": num(hi)}


NAN = Estimate(math.nan, math.nan)


def fold_of(prompt_id: str, folds: int = FOLDS) -> int:
    """The cross-fitting fold of a prompt: ``int(sha256(prompt_id)[:8], 16) % folds``."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) % folds


# ---------------------------------------------------------------- isotonic calibration
def isotonic_fit(x: Sequence[float], y: Sequence[float], w: Sequence[float] | None = None):
    """Non-decreasing step function fitted by pool-adjacent-violators (weighted least squares).
    Returns ``(left edges, values)``: the fitted value at x is that of the last block whose left
    edge is <= x (the first block's below all edges)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    w = np.ones_like(x) if w is None else np.asarray(w, float)
    if len(x) == 0:
        raise ValueError("isotonic_fit needs at least one point")
    order = np.lexsort((y, x))
    blocks: list[list[float]] = []  # [weighted sum, weight, left edge]
    for i in order:
        blocks.append([w[i] * y[i], w[i], x[i]])
        while len(blocks) > 1 and _mean(blocks[-2]) >= _mean(blocks[-1]):
            s, ww, _ = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += ww
    edges = np.array([b[2] for b in blocks])
    values = np.array([_mean(b) for b in blocks])
    return edges, values


def _mean(block: list[float]) -> float:
    return block[0] / block[1] if block[1] > 0 else 0.0


def isotonic_predict(fit, x: Sequence[float]) -> np.ndarray:
    edges, values = fit
    idx = np.searchsorted(edges, np.asarray(x, float), side="right") - 1
    return values[np.clip(idx, 0, len(values) - 1)]


def crossfit(
    scores: Sequence[float], labels: Sequence[float], prompt_ids: Sequence[str], weights=None, folds: int = FOLDS
) -> np.ndarray:
    """Cross-fitted calibrated scores (module doc); a fold whose complement is empty uses the full fit."""
    s, y = np.asarray(scores, float), np.asarray(labels, float)
    w = None if weights is None else np.asarray(weights, float)
    f = np.array([fold_of(p, folds) for p in prompt_ids])
    out = np.empty_like(s)
    full = isotonic_fit(s, y, w)
    for k in np.unique(f):
        train = f != k
        fit = isotonic_fit(s[train], y[train], None if w is None else w[train]) if train.any() else full
        out[f == k] = isotonic_predict(fit, s[f == k])
    return out


# ---------------------------------------------------------------- estimators
def cluster_se(phi: Sequence[float], clusters: Sequence[str]) -> float:
    """sqrt(G/(G-1) sum_g S_g^2) / n for centred influence values ``phi`` (module doc)."""
    phi = np.asarray(phi, float)
    n = len(phi)
    sums: dict[str, float] = {}
    for v, c in zip(phi, clusters):
        sums[c] = sums.get(c, 0.0) + v
    g = len(sums)
    if n == 0 or g < 2:
        return math.nan
    return math.sqrt(g / (g - 1) * sum(v * v for v in sums.values())) / n


def ips(w, r, clusters) -> Estimate:
    w, r = np.asarray(w, float), np.asarray(r, float)
    v = float(np.mean(w * r))
    return Estimate(v, cluster_se(w * r - v, clusters))


def snips(w, r, clusters) -> Estimate:
    w, r = np.asarray(w, float), np.asarray(r, float)
    if w.sum() <= 0:
        return NAN
    v = float((w * r).sum() / w.sum())
    return Estimate(v, cluster_se(w * (r - v) / w.mean(), clusters))


def direct(q_fresh, fresh_clusters) -> Estimate:
    """DM from fresh draws of the target: mean q over them."""
    q = np.asarray(q_fresh, float)
    if len(q) == 0:
        return NAN
    v = float(q.mean())
    return Estimate(v, cluster_se(q - v, fresh_clusters))


def doubly_robust(w, y, q, clusters, dm: Estimate | None = None) -> Estimate:
    """DR (module doc): ``dm`` from fresh draws, or None for the logged SNIPS(q) direct term."""
    w, y, q = np.asarray(w, float), np.asarray(y, float), np.asarray(q, float)
    resid = w * (y - q)
    r = float(resid.mean())
    if dm is not None:
        se_res = cluster_se(resid - r, clusters)
        return Estimate(dm.value + r, math.sqrt(dm.se**2 + se_res**2))
    if w.sum() <= 0:
        return NAN
    s = float((w * q).sum() / w.sum())
    phi = w * (q - s) / w.mean() + resid - r
    return Estimate(s + r, cluster_se(phi, clusters))


def estimate_all(
    log_w: Sequence[float],
    labels: Sequence[float],
    outcomes: dict[str, np.ndarray],
    clusters: Sequence[str],
    fresh: dict[str, tuple[np.ndarray, Sequence[str]]] | None = None,
) -> dict[str, Estimate]:
    """Every estimator x variant: ``{"IPS[label]": ..., "SNIPS[cal]": ..., "DR[raw]": ..., "DM[cal_w]": ...}``.
    ``outcomes``: variant -> q on the logged records; ``fresh``: variant -> (q on fresh draws, their prompts)."""
    w = np.exp(np.asarray(log_w, float))
    y = np.asarray(labels, float)
    out = {"IPS[label]": ips(w, y, clusters), "SNIPS[label]": snips(w, y, clusters)}
    for name, q in outcomes.items():
        out[f"IPS[{name}]"] = ips(w, q, clusters)
        out[f"SNIPS[{name}]"] = snips(w, q, clusters)
        dm = direct(*fresh[name]) if fresh and name in fresh else None
        out[f"DM[{name}]"] = dm if dm is not None else snips(w, q, clusters)
        out[f"DR[{name}]"] = doubly_robust(w, y, q, clusters, dm)
    return out


__all__ = [
    "FOLDS",
    "Estimate",
    "cluster_se",
    "crossfit",
    "direct",
    "doubly_robust",
    "estimate_all",
    "fold_of",
    "ips",
    "isotonic_fit",
    "isotonic_predict",
    "snips",
]
