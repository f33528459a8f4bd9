"""100-bucket confidence calibration: fill rule, overall accuracy, ECE/MCE/adaptive ECE, readers."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

from sample_smart.calibration import BucketCalibrator, adaptive_ece, ece, fill_empty, mce, read_pairs


def _filled(populated_values: dict) -> np.ndarray:
    values = np.zeros(100)
    populated = np.zeros(100, bool)
    for k, v in populated_values.items():
        values[k], populated[k] = v, True
    return fill_empty(values, populated)


def test_fill_rule_toward_one_half():
    f = _filled({9: 0.09, 11: 0.11, 79: 0.79, 81: 0.81})
    assert f[10] == 0.11  # below 0.5: equidistant neighbours, the one toward 0.5 wins
    assert f[80] == 0.79  # above 0.5: toward 0.5 is downward
    assert f[0] == 0.09 and f[99] == 0.81
    assert f[30] == 0.79  # walks up across 0.5 to the next populated bucket
    assert f[70] == 0.11  # walks down across 0.5
    f = _filled({70: 0.7, 90: 0.9})
    assert f[85] == 0.7  # the nearest *toward 0.5*, even though bucket 90 is closer
    assert f[60] == 0.7  # nothing below 60 (the side toward 0.5 is empty): take the other direction
    assert f[20] == 0.7 and f[95] == 0.9
    f = _filled({49: 0.4, 50: 0.6})
    assert f[48] == 0.4 and f[51] == 0.6 and f[0] == 0.4 and f[99] == 0.6  # 49 looks up, 50 looks down
    f = _filled({10: 0.1})
    assert (f == 0.1).all()
    with pytest.raises(ValueError, match="no bucket is populated"):
        fill_empty(np.zeros(100), np.zeros(100, bool))


def _pairs(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.beta(4, 1.5, n) * 0.999
    correct = rng.random(n) < conf**1.5  # overconfident
    return conf, correct


def test_bucket_calibration_counts_and_overall_accuracy():
    conf, correct = _pairs()
    cal = BucketCalibrator().fit(conf, correct)
    assert cal.filled_.shape == (100,) and np.all((cal.filled_ >= 0) & (cal.filled_ <= 1))
    assert cal.counts_.sum() == conf.size
    k = 87
    sel = np.floor(conf * 100) == k
    assert cal.accuracy_[k] == pytest.approx(correct[sel].mean())
    assert cal.overall_accuracy_raw_ == pytest.approx(correct.mean())
    assert cal.overall_accuracy_buckets_ == pytest.approx(cal.overall_accuracy_raw_, abs=1e-12)
    np.testing.assert_array_equal(cal.transform(conf), cal.filled_[np.minimum(np.floor(conf * 100), 99).astype(int)])
    assert cal.transform([1.0]).item() == cal.filled_[99]


def test_ece_and_mce_agree_with_torchmetrics():
    conf, correct = _pairs(seed=1)
    preds, target = torch.from_numpy(conf), torch.from_numpy(correct.astype(np.int64))
    for n_bins in (100, 15):
        ref_l1 = binary_calibration_error(preds, target, n_bins=n_bins, norm="l1").item()
        ref_max = binary_calibration_error(preds, target, n_bins=n_bins, norm="max").item()
        assert ece(conf, correct, n_bins) == pytest.approx(ref_l1, abs=1e-9)
        assert mce(conf, correct, n_bins) == pytest.approx(ref_max, abs=1e-9)
    cal = BucketCalibrator().fit(conf, correct)
    assert cal.ece_ == pytest.approx(ece(conf, correct)) and cal.mce_ == pytest.approx(mce(conf, correct))


def test_adaptive_ece_uses_equal_mass_bins():
    conf = np.array([0.1, 0.2, 0.3, 0.9, 0.95, 0.99])
    correct = np.array([0, 1, 0, 1, 1, 0])
    # 2 equal-mass bins: {0.1, 0.2, 0.3} acc 1/3 conf 0.2; {0.9, 0.95, 0.99} acc 2/3 conf 0.9467
    expect = 0.5 * abs(1 / 3 - 0.2) + 0.5 * abs(2 / 3 - (0.9 + 0.95 + 0.99) / 3)
    assert adaptive_ece(conf, correct, n_bins=2) == pytest.approx(expect)
    assert adaptive_ece(conf, correct, n_bins=1) == pytest.approx(abs(0.5 - conf.mean()))


def test_bad_pairs_are_rejected():
    with pytest.raises(ValueError, match="confidence must be in"):
        BucketCalibrator().fit([0.5, 1.2], [True, False])
    with pytest.raises(ValueError, match="correct must be a boolean"):
        BucketCalibrator().fit([0.5, 0.2], [1, 2])
    with pytest.raises(ValueError, match="no .* pairs"):
        BucketCalibrator().fit([], [])


def test_read_pairs_jsonl_and_csv(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"confidence": 0.9, "correct": true}\n\n{"confidence": 0.2, "correct": 0}\n')
    conf, corr = read_pairs(tmp_path / "p.jsonl")
    assert conf.tolist() == [0.9, 0.2] and corr.tolist() == [True, False]
    (tmp_path / "p.csv").write_text("id,confidence,correct\na,0.9,True\nb,0.25,false\nc,1,1\n")
    conf, corr = read_pairs(tmp_path / "p.csv")
    assert conf.tolist() == [0.9, 0.25, 1.0] and corr.tolist() == [True, False, True]
    (tmp_path / "bad.jsonl").write_text('{"confidence": 0.9, "correct": true}\n{"confidence": 1.5, "correct": true}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: 'confidence' must be a number in \[0, 1\]"):
        read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"confidence": 0.9, "correct": "maybe"}\n')
    with pytest.raises(ValueError, match=r"bad2\.jsonl:1: 'correct' must be a boolean"):
        read_pairs(tmp_path / "bad2.jsonl")
    (tmp_path / "bad.csv").write_text("conf,ok\n0.1,1\n")
    with pytest.raises(ValueError, match="columns 'confidence' and 'correct'"):
        read_pairs(tmp_path / "bad.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no \\(confidence, correct\\) pairs"):
        read_pairs(tmp_path / "empty.jsonl")
    (tmp_path / "trunc.jsonl").write_text('{"confidence": 0.9, "correct": true}\n{"confidence": 0.')
    with pytest.raises(ValueError, match=r"trunc\.jsonl:2: truncated last line"):
        read_pairs(tmp_path / "trunc.jsonl")
