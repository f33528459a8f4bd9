"""Importance-weight diagnostics of one target policy (numpy only).

For log-weights lw_i = log pi(a_i|x_i) - log pi_0(a_i|x_i) (-inf: weight 0), w_i = exp(lw_i):

* ``ess`` = (sum w)^2 / sum w^2 (Kish), ``ess_pct`` = 100 ess / n;
* ``max_weight`` = max w (raw: 1 means pi and pi_0 agree on that response), ``max_weight_share``
  = max w / sum w;
* ``zero_share``: share of records with w = 0 (a token outside the target's kept set);
* ``top5_share``: share of sum w held by the ceil(5% n) largest weights;
* ``hill_alpha``: Hill's tail index over the k = max(2, floor(sqrt(n+))) largest positive weights,
  alpha = k / sum_{j<=k} ln(w_(j) / w_(k+1)) (Hill 1975); alpha < 2: the weights' variance is
  effectively infinite and IPS intervals are not to be trusted; None when n+ <= k or all equal;
* ``max_abs_log_w``: max |lw| over the records with w > 0 (the clone check reads it).

Sums are computed after subtracting max lw (scale-free ratios), so huge weights do not overflow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CLONE_TOL = 1e-6


class CloneCheckError(RuntimeError):
    """pi_clone's weights are not 1: the teacher forcing is not deterministic or not one code path."""


def weight_diagnostics(log_w: Sequence[float]) -> dict[str, float | int | None]:
    lw = np.asarray(log_w, float)
    n = len(lw)
    pos = lw[np.isfinite(lw)]
    out: dict[str, float | int | None] = {"n": n, "zero_share": float(1 - len(pos) / n) if n else None}
    if len(pos) == 0:
        out.update(ess=0.0, ess_pct=0.0, max_weight=0.0, max_weight_share=None, top5_share=None)
        out.update(hill_alpha=None, max_abs_log_w=None)
        return out
    m = pos.max()
    s = np.exp(pos - m)  # w / max w
    ess = float(s.sum() ** 2 / (s * s).sum())
    top = int(math.ceil(0.05 * n))
    srt = np.sort(s)[::-1]
    out.update(
        ess=ess,
        ess_pct=100.0 * ess / n,
        max_weight=float(math.exp(m)) if m < 700 else math.inf,
        max_weight_share=float(1.0 / s.sum()),
        top5_share=float(srt[:top].sum() / s.sum()),
        hill_alpha=hill_alpha(pos),
        max_abs_log_w=float(np.abs(pos).max()),
    )
    return out


def hill_alpha(log_w_pos: Sequence[float]) -> float | None:
    """Hill's tail index (module doc) from the finite log-weights."""
    lw = np.sort(np.asarray(log_w_pos, float))[::-1]
    k = max(2, int(math.floor(math.sqrt(len(lw)))))
    if len(lw) <= k:
        return None
    denom = float((lw[:k] - lw[k]).sum())
    return k / denom if denom > 0 else None


def check_clone(log_w: Sequence[float], tol: float = CLONE_TOL) -> float:
    """max |log w| of pi_clone; CloneCheckError when any weight differs from 1 by more than ``tol`` in log."""
    lw = np.asarray(log_w, float)
    worst = float(np.max(np.abs(lw))) if len(lw) else 0.0
    if not worst <= tol:  # NaN and inf fail too
        raise CloneCheckError(
            f"pi_clone: max |log w| = {worst:.3g} > {tol:g}: the clone of the logging policy must have weight 1; "
            "teacher forcing is not deterministic or the policies did not share one code path"
        )
    return worst
