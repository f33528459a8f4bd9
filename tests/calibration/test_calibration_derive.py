"""From grid/fit to decoders: Calibrated-TopK, Calibrated-epsilon, equivalent epsilon, calibration files."""

import json

import numpy as np
import pytest
import torch
from calibration_synth import make_records

from sample_smart import DecodeConfig, process
from sample_smart.calibration import (
    CalibrationGrid,
    build_calibration,
    calibrated_epsilon,
    calibrated_topk,
    equivalent_epsilon,
    fit_grid,
    fit_power_law,
    load_decoder_settings,
    save_calibration,
)


def _grid_with(rows: dict, max_rank: int = 4) -> CalibrationGrid:
    """Grid with given hit counts per bin: {bin: [hits at rank 1..R] + [beyond]}."""
    g = CalibrationGrid(max_rank=max_rank)
    for m, hits in rows.items():
        g.hits[m] = hits[:max_rank]
        g.beyond[m] = hits[max_rank]
        g.counts[m] = sum(hits)
        g.prob_sums[m] = g.counts[m] * np.array([0.5, 0.2, 0.1, 0.05])[:max_rank]
    return g


def test_calibrated_topk_rule_highest_bin_first():
    g = _grid_with(
        {
            9: [95, 4, 1, 0, 0],  # c = .95 .04 .01 0      -> K = 1 at c = .05
            5: [50, 20, 10, 6, 14],  # c = .5 .2 .1 .06        -> K = 4
            3: [40, 2, 30, 1, 27],  # c = .4 .02 .3 .01       -> K = 3 (largest rank, not contiguous)
            0: [3, 3, 3, 0, 1],  # only 10 positions       -> K = 1 by the min-samples rule
        }
    )
    ks = calibrated_topk(g, 0.05, min_samples=50)
    assert ks == [1, 1, 1, 1, 4, 1, 3, 1, 1, 1]  # index 0 = bin 9, index 9 = bin 0
    assert calibrated_topk(g, 0.05, min_samples=5)[9] == 3
    assert calibrated_topk(g, 0.005, min_samples=50)[0] == 3
    assert calibrated_topk(g, 0.99, min_samples=0) == [1] * 10  # at least 1
    with pytest.raises(ValueError, match=r"threshold c_min must be in \(0, 1\]"):
        calibrated_topk(g, 0.0)


def test_equivalent_epsilon_keeps_the_same_tokens_as_the_fit():
    p = np.geomspace(1e-4, 0.9, 30)
    for base in ("e", 10):
        f = fit_power_law(p, 0.6 * p**0.7, base=base, n_boot=0)
        eps = equivalent_epsilon(f, 0.05)
        assert eps == pytest.approx((0.05 / 0.6) ** (1 / 0.7))
        probs = np.random.default_rng(0).dirichlet(np.full(200, 0.1), size=20)
        np.testing.assert_array_equal(f.keep(probs, 0.05), probs >= eps)
        assert calibrated_epsilon(f, 0.05) == {"cal_acc": [f.A, f.B, 0.05], "cal_acc_base": base}
    decreasing = fit_power_law(p, 0.01 / p**0.2, n_boot=0)
    with pytest.raises(ValueError, match="B > 0"):
        calibrated_epsilon(decreasing, 0.05)


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    g = CalibrationGrid().update_records(make_records(seed=8, n_records=30, n_tokens=80))
    fit = fit_grid(g, base="e", n_boot=100)
    path = tmp_path_factory.mktemp("cal") / "calib.json"
    save_calibration(path, build_calibration(g, fit, topk_threshold=0.05, epsilon_threshold=0.1, min_samples=20))
    return path, g, fit


def test_calibration_file_is_self_describing(calibration_file):
    path, g, fit = calibration_file
    data = json.loads(path.read_text())
    assert data["schema"] == "sample_smart.calibration/1" and data["log_base"] == "e" == data["fit"]["base"]
    assert data["bins"]["edges"][0] == 0.0 and "floor(10 * p_max)" in data["bins"]["rule"]
    assert data["source"]["n_records"] == 30 and data["source"]["models"] == ["synthetic"]
    assert data["derived"]["calibrated_topk"]["dynamic_top_k"] == calibrated_topk(g, 0.05, 20)
    assert data["derived"]["calibrated_epsilon"]["equivalent_epsilon"] == pytest.approx(equivalent_epsilon(fit, 0.1))


def test_load_decoder_settings_and_decodeconfig(calibration_file):
    path, g, fit = calibration_file
    assert load_decoder_settings(path, "topk", None) == {"dynamic_top_k": calibrated_topk(g, 0.05, 20)}
    assert load_decoder_settings(path, "topk", 0.2) == {"dynamic_top_k": calibrated_topk(g, 0.2, 20)}
    eps = load_decoder_settings(path, "epsilon", 0.05)
    assert eps["cal_acc_base"] == "e" and eps["cal_acc"] == pytest.approx([fit.A, fit.B, 0.05])
    cfg = DecodeConfig.from_calibration(str(path), mode="epsilon", threshold=0.05)
    torch.manual_seed(0)
    logits = torch.randn(16, 400) * torch.linspace(0.5, 5, 16)[:, None]
    kept = torch.isfinite(process(logits, cfg))
    probs = torch.softmax(logits.double(), -1)
    expect = (probs >= equivalent_epsilon(fit, 0.05)) | (logits == logits.max(-1, keepdim=True).values)
    assert torch.equal(kept, expect)
    # Calibrated-TopK through the decoder: each row keeps K of its p_max decile
    cfg_k = DecodeConfig.from_calibration(str(path), mode="topk", threshold=0.02)
    ks = calibrated_topk(g, 0.02, 20)
    kept_k = torch.isfinite(process(logits, cfg_k)).sum(-1)
    bins = torch.clamp((probs.max(-1).values * 10).floor().long(), max=9)
    assert kept_k.tolist() == [ks[9 - b] for b in bins.tolist()]


def test_load_decoder_settings_errors(tmp_path, calibration_file):
    path, g, _ = calibration_file
    with pytest.raises(ValueError, match="mode must be one of topk, epsilon"):
        load_decoder_settings(path, "greedy", 0.1)
    with pytest.raises(ValueError, match="no such file"):
        load_decoder_settings(tmp_path / "nope.json", "topk", 0.1)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_decoder_settings(tmp_path / "junk.json", "topk", 0.1)
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_decoder_settings(tmp_path / "empty.json", "topk", 0.1)
    data = json.loads(path.read_text())
    del data["grid"]
    (tmp_path / "nogrid.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lacks the 'grid' field"):
        load_decoder_settings(tmp_path / "nogrid.json", "topk", 0.1)
    data = json.loads(path.read_text())
    del data["fit"]["base"]
    (tmp_path / "nobase.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="log base"):
        load_decoder_settings(tmp_path / "nobase.json", "epsilon", 0.1)
    # a bare grid file serves Calibrated-TopK but not Calibrated-epsilon
    g.save(tmp_path / "grid.json")
    assert "dynamic_top_k" in load_decoder_settings(tmp_path / "grid.json", "topk", 0.05)
    with pytest.raises(ValueError, match="needs a power-law fit"):
        load_decoder_settings(tmp_path / "grid.json", "epsilon", 0.05)
    with pytest.raises(ValueError, match="no threshold given"):
        load_decoder_settings(tmp_path / "grid.json", "topk", None)
