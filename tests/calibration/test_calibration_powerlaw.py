"""Power-law fit log c = A + B log p: recovery, weights, exclusions, CIs, and log bases."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from calibration_synth import make_records

from sample_smart import DecodeConfig, process
from sample_smart.calibration import (
    CalibrationGrid,
    PowerLawFit,
    convert_coefficients,
    fit_grid,
    fit_power_law,
    normalize_base,
)


def test_exact_power_law_is_recovered_in_both_bases():
    p = np.geomspace(1e-4, 0.9, 30)
    c = math.exp(-0.7) * p**0.8
    fe = fit_power_law(p, c, base="e", n_boot=0)
    assert fe.A == pytest.approx(-0.7) and fe.B == pytest.approx(0.8) and fe.r2 == pytest.approx(1.0)
    f10 = fit_power_law(p, c, base=10, n_boot=0)
    assert f10.base == 10 and f10.B == pytest.approx(0.8)
    assert f10.A == pytest.approx(-0.7 / math.log(10))
    assert convert_coefficients(fe.A, fe.B, "e", 10) == pytest.approx((f10.A, f10.B))
    np.testing.assert_allclose(fe.predict(p), c)
    np.testing.assert_allclose(f10.predict(p), c)


def test_unweighted_fit_agrees_with_scipy_and_weighted_with_polyfit():
    rng = np.random.default_rng(0)
    p = np.geomspace(1e-3, 0.95, 40)
    c = np.exp(-0.5 + 0.9 * np.log(p) + rng.normal(0, 0.2, p.size))
    w = rng.integers(1, 500, p.size)
    ref = scipy.stats.linregress(np.log(p), np.log(c))
    f = fit_power_law(p, c, n_boot=0)
    assert (f.A, f.B) == pytest.approx((ref.intercept, ref.slope))
    assert f.r2 == pytest.approx(ref.rvalue**2)
    fw = fit_power_law(p, c, weights=w, n_boot=0)
    slope, intercept = np.polyfit(np.log(p), np.log(c), 1, w=np.sqrt(w))  # polyfit weights the residuals
    assert (fw.A, fw.B) == pytest.approx((intercept, slope)) and fw.weighted


def test_bootstrap_interval_covers_the_truth_and_is_reproducible():
    rng = np.random.default_rng(1)
    p = np.geomspace(1e-3, 0.95, 60)
    c = np.exp(-0.5 + 0.9 * np.log(p) + rng.normal(0, 0.1, p.size))
    f = fit_power_law(p, c, n_boot=500, seed=7)
    assert f.A_ci[0] < -0.5 < f.A_ci[1] and f.B_ci[0] < 0.9 < f.B_ci[1]
    assert f.A_ci[0] < f.A < f.A_ci[1] and f.B_ci[0] < f.B < f.B_ci[1]
    assert fit_power_law(p, c, n_boot=500, seed=7).A_ci == f.A_ci
    f10 = f.to_base(10)
    assert f10.A_ci == pytest.approx(tuple(a / math.log(10) for a in f.A_ci)) and f10.B_ci == f.B_ci


def test_excluded_cells_are_reported_with_reasons():
    records = make_records(seed=5, n_records=4, n_tokens=60)
    g = CalibrationGrid(max_rank=10).update_records(records)
    f = fit_grid(g, n_boot=0)
    reasons = {tuple(e["label"]): e["reason"] for e in f.excluded}
    empty_bins = np.flatnonzero(g.counts == 0)
    zero_cells = [(m, r + 1) for m, r in zip(*np.nonzero((g.hits == 0) & (g.counts[:, None] > 0)))]
    assert zero_cells, "the test needs some zero-hit cells"
    for m, r in zero_cells:
        assert reasons[(m, r)] == "c = 0 (log undefined)"
    for m in empty_bins:
        assert "empty bin" in reasons[(m, 1)]
    assert f.n_cells + len(f.excluded) == 10 * 10
    small = fit_grid(g, n_boot=0, min_count=int(g.counts.max()))
    assert any("min_count" in e["reason"] for e in small.excluded)


def test_too_few_cells_is_an_error():
    with pytest.raises(ValueError, match="at least 3 usable cells"):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.0, 0.2])
    with pytest.raises(ValueError, match="log base"):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.1, 0.2], base=2)


def test_fit_in_one_base_applied_in_the_other_keeps_the_same_tokens():
    """A natural-log fit converted to base 10 keeps exactly the tokens the natural-log rule keeps,
    both in the fit's own rule and through the decoder (cal_acc with cal_acc_base)."""
    g = CalibrationGrid().update_records(make_records(seed=6, n_records=20, n_tokens=80))
    fe = fit_grid(g, base="e", n_boot=0)
    f10 = fe.to_base(10)
    torch.manual_seed(2)
    logits = torch.randn(64, 300, dtype=torch.float64) * torch.linspace(0.5, 6, 64, dtype=torch.float64)[:, None]
    probs = torch.softmax(logits, -1).numpy()
    for c_min in (0.01, 0.05, 0.2):
        keep_e, keep_10 = fe.keep(probs, c_min), f10.keep(probs, c_min)
        np.testing.assert_array_equal(keep_e, keep_10)
        # the same rule written out as the decoder's formula b^A p^B >= c_min
        np.testing.assert_array_equal(keep_10, 10**f10.A * probs**f10.B >= c_min * (1 - 1e-12))
        out_e = process(logits.float(), DecodeConfig.from_dict({"cal_acc": [fe.A, fe.B, c_min], "cal_acc_base": "e"}))
        out_10 = process(logits.float(), DecodeConfig.from_dict({"cal_acc": [f10.A, f10.B, c_min], "cal_acc_base": 10}))
        kept_e, kept_10 = torch.isfinite(out_e), torch.isfinite(out_10)
        assert torch.equal(kept_e, kept_10)
        # and the decoder keeps what the fit keeps (plus the argmax, which is never removed)
        expect = torch.from_numpy(keep_e) | (logits == logits.max(-1, keepdim=True).values)
        margin = np.abs(fe.log_c(probs) - np.log(c_min)) > 1e-4  # ignore fp32 ties at the boundary
        assert torch.equal(kept_e[torch.from_numpy(margin)], expect[torch.from_numpy(margin)])
    # the mistake the reference notebook makes: a natural-log fit used as if it were base 10
    wrong = process(logits.float(), DecodeConfig.from_dict({"cal_acc": [fe.A, fe.B, 0.05], "cal_acc_base": 10}))
    right = process(logits.float(), DecodeConfig.from_dict({"cal_acc": [fe.A, fe.B, 0.05], "cal_acc_base": "e"}))
    assert not torch.equal(torch.isfinite(wrong), torch.isfinite(right))


def test_fit_serialises_with_its_base():
    f = fit_power_law(np.geomspace(0.01, 0.9, 10), np.geomspace(0.005, 0.8, 10), base=10, n_boot=50)
    d = f.to_dict()
    assert d["base"] == 10 and "log_b c = A + B * log_b p" in d["law"]
    back = PowerLawFit.from_dict(d)
    assert (back.A, back.B, back.base, back.A_ci, back.B_ci, back.r2) == (f.A, f.B, f.base, f.A_ci, f.B_ci, f.r2)
    d.pop("base")
    with pytest.raises(ValueError, match="must name its log base"):
        PowerLawFit.from_dict(d)
    assert normalize_base("ln") == "e" and normalize_base("10") == 10 and normalize_base(math.e) == "e"
