"""Estimators and diagnostics against a hand-computed example.

w = [1, 2, 0, 0.5] (log w = [0, ln 2, -inf, -ln 2]), y = [1, 0, 1, 1], prompts a, a, b, b.
IPS = 1.5/4 = 0.375; phi = w y - IPS = [.625, -.375, -.375, .125]: S_a = .25, S_b = -.25,
se = sqrt(2 (.0625 + .0625)) / 4 = 0.125. SNIPS = 1.5/3.5 = 3/7; phi = w (y - 3/7) / 0.875:
S_a = -16/49, S_b = 16/49, se = sqrt(2 * 2 (16/49)^2) / 4 = 8/49. DR with q = 0.5 everywhere and no
fresh draws: SNIPS(q) = 0.5, residual mean = (0.5 - 1 + 0 + 0.25)/4 = -0.0625, DR = 0.4375,
phi = [.5625, -.9375, .0625, .3125]: S = -/+ .375, se = sqrt(2 * 2 * .140625) / 4 = 0.1875.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sample_smart.ope.diagnostics import CloneCheckError, check_clone, hill_alpha, weight_diagnostics
from sample_smart.ope.estimators import (
    Estimate,
    crossfit,
    direct,
    doubly_robust,
    estimate_all,
    fold_of,
    ips,
    isotonic_fit,
    isotonic_predict,
    snips,
)

W = [1.0, 2.0, 0.0, 0.5]
LW = [0.0, math.log(2), -math.inf, -math.log(2)]
Y = [1.0, 0.0, 1.0, 1.0]
C = ["a", "a", "b", "b"]


def test_ips_snips_by_hand():
    e = ips(W, Y, C)
    assert e.value == pytest.approx(0.375) and e.se == pytest.approx(0.125)
    e = snips(W, Y, C)
    assert e.value == pytest.approx(3 / 7) and e.se == pytest.approx(8 / 49)
    lo, hi = e.ci
    assert lo == pytest.approx(3 / 7 - 1.959964 * 8 / 49, abs=1e-6) and hi > e.value


def test_dr_and_dm_by_hand():
    q = [0.5] * 4
    e = doubly_robust(W, Y, q, C)
    assert e.value == pytest.approx(0.4375) and e.se == pytest.approx(0.1875)
    # with a direct term from fresh draws: DM + residual, se added in quadrature
    e = doubly_robust(W, Y, q, C, dm=Estimate(0.6, 0.1))
    assert e.value == pytest.approx(0.5375) and e.se == pytest.approx(math.sqrt(0.01 + 0.1875**2))
    d = direct([1.0, 0.0, 1.0, 1.0], C)  # phi = [.25, -.75, .25, .25]: S = -/+ .5, se = sqrt(2 * .5) / 4
    assert d.value == pytest.approx(0.75) and d.se == pytest.approx(0.25)


def test_estimate_all_names_and_label_reward():
    out = estimate_all(LW, Y, {"raw": np.full(4, 0.5)}, C)
    assert out["IPS[label]"].value == pytest.approx(0.375)
    assert out["DR[raw]"].value == pytest.approx(0.4375)
    assert out["DM[raw]"].value == pytest.approx(0.5)  # no fresh draws: SNIPS of q
    assert set(out) == {"IPS[label]", "SNIPS[label]", "IPS[raw]", "SNIPS[raw]", "DM[raw]", "DR[raw]"}


def test_all_zero_weights_give_nan_snips_not_a_crash():
    assert math.isnan(snips([0.0, 0.0], [1.0, 0.0], ["a", "b"]).value)


def test_isotonic_by_hand():
    fit = isotonic_fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])  # blocks {0.1}: 0, {0.2, 0.3}: 0.5, {0.4}: 1
    assert isotonic_predict(fit, [0.05, 0.1, 0.25, 0.35, 0.9]).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    fit = isotonic_fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], [1, 3, 1, 1])  # pooled block (3*1 + 1*0)/4
    assert isotonic_predict(fit, [0.3]).tolist() == [0.75]


def test_crossfit_never_uses_the_own_fold():
    pids = [f"p{i}" for i in range(40)]
    s = np.linspace(0, 1, 40)
    y = (s > 0.5).astype(float)
    cal = crossfit(s, y, pids)
    folds = np.array([fold_of(p) for p in pids])
    assert len(set(folds.tolist())) > 1
    # flip the labels of one fold: that fold's own predictions do not move
    k = folds[0]
    y2 = y.copy()
    y2[folds == k] = 1 - y2[folds == k]
    assert np.array_equal(crossfit(s, y2, pids)[folds == k], cal[folds == k])


def test_diagnostics_by_hand():
    d = weight_diagnostics(LW)
    assert d["ess"] == pytest.approx(3.5**2 / 5.25)
    assert d["ess_pct"] == pytest.approx(100 * 3.5**2 / 5.25 / 4)
    assert d["max_weight"] == pytest.approx(2.0)
    assert d["zero_share"] == pytest.approx(0.25)
    assert d["top5_share"] == pytest.approx(2 / 3.5)  # ceil(5% of 4) = 1 weight
    # Hill: k = 2 of the 3 positive weights, alpha = 2 / ((ln2 - ln.5) + (0 - ln.5)) = 2 / (3 ln 2)
    assert d["hill_alpha"] == pytest.approx(2 / (3 * math.log(2)))
    assert hill_alpha([0.0, 0.0]) is None
    z = weight_diagnostics([-math.inf, -math.inf])
    assert z["zero_share"] == 1.0 and z["ess"] == 0.0


def test_clone_check_fails_loudly():
    assert check_clone([0.0, 5e-7, -5e-7]) == pytest.approx(5e-7)
    with pytest.raises(CloneCheckError, match="pi_clone"):
        check_clone([0.0, 1e-5])
    with pytest.raises(CloneCheckError):
        check_clone([float("nan")])
