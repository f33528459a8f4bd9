"""The calibration grid: bin rule, hand-computed cells, streaming/merging, JSON round trip."""

import json
import math

import numpy as np
import pytest
from calibration_synth import make_records, write_traces

from sample_smart.calibration import CalibrationGrid, grid_from_traces, p_max_bin


def test_bin_rule_matches_the_decoders_including_edges():
    p = [0.0, 0.0999, 0.1, 0.35, 0.5, 0.8999, 0.9, 0.95, 1.0, 1.0 + 1e-7]
    assert p_max_bin(p).tolist() == [0, 0, 1, 3, 5, 8, 9, 9, 9, 9]
    for bad in (-0.01, 1.1, float("nan")):
        with pytest.raises(ValueError, match="p_max must be probabilities"):
            p_max_bin([0.5, bad])


def test_hand_computed_cells():
    g = CalibrationGrid(max_rank=3)
    # bin 9: two positions (gold rank 1, gold rank 4 = beyond); bin 2: one position (rank 2)
    g.update(
        p_max=[0.95, 0.91, 0.25],
        gold_rank=[1, 4, 2],
        top_probs=[[0.95, 0.03, 0.01], [0.91, 0.05, 0.02], [0.25, 0.2, 0.1]],
    )
    assert g.counts.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 2]
    assert g.beyond.tolist() == [0] * 9 + [1]
    np.testing.assert_allclose(g.c[9], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(g.c[2], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(g.p[9], [0.93, 0.04, 0.015])
    np.testing.assert_allclose(g.expected_accuracy[9], 0.5 * 0.93)
    np.testing.assert_allclose(g.expected_accuracy[2], 0.2)
    np.testing.assert_allclose(g.mean_p_max[9], 0.93)
    assert np.isnan(g.c[0]).all() and np.isnan(g.expected_accuracy[0])


def test_grid_matches_a_brute_force_count():
    records = make_records(seed=1, n_records=5, n_tokens=80)
    g = CalibrationGrid(max_rank=5).update_records(records)
    pm = np.concatenate([r["p_max"] for r in records])
    rk = np.concatenate([r["gold_rank"] for r in records])
    tp = np.exp(np.concatenate([r["top_logprobs"] for r in records]))
    for m in range(10):
        sel = [i for i in range(len(pm)) if min(math.floor(10 * pm[i]), 9) == m]
        assert g.counts[m] == len(sel)
        for r in range(1, 6):
            hits = sum(1 for i in sel if rk[i] == r)
            if sel:
                assert g.c[m, r - 1] == pytest.approx(hits / len(sel))
                assert g.p[m, r - 1] == pytest.approx(np.mean([tp[i, r - 1] for i in sel]))
    assert g.hits.sum() + g.beyond.sum() == len(pm) == g.n_tokens


def test_streaming_in_parts_and_merging_equals_one_pass():
    records = make_records(seed=2, n_records=12, n_tokens=50)
    whole = CalibrationGrid().update_records(records)
    a = CalibrationGrid().update_records(records[:5])
    b = CalibrationGrid().update_records(records[5:])
    merged = a + b
    for name in ("counts", "hits", "beyond"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    np.testing.assert_allclose(merged.prob_sums, whole.prob_sums)
    assert merged.source["n_records"] == 12
    with pytest.raises(ValueError, match="max_rank"):
        a.merge(CalibrationGrid(max_rank=3))


def test_json_round_trip_and_self_description(tmp_path):
    g = CalibrationGrid(max_rank=4).update_records(make_records(seed=3, n_records=3))
    path = g.save(tmp_path / "grid.json")
    data = json.loads(path.read_text())
    assert data["bins"]["edges"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert "floor(10 * p_max)" in data["bins"]["rule"] and "raw" in data["distribution"]
    back = CalibrationGrid.load(path)
    np.testing.assert_array_equal(back.hits, g.hits)
    np.testing.assert_allclose(back.c, g.c, equal_nan=True)
    data["counts"][9] += 1  # now hits + beyond != counts
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do not add up"):
        CalibrationGrid.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "something/1"}')
    with pytest.raises(ValueError, match="schema"):
        CalibrationGrid.load(tmp_path / "other.json")


def test_bad_inputs_are_named():
    g = CalibrationGrid(max_rank=5)
    with pytest.raises(ValueError, match="max_rank"):
        g.update([0.5], [1], [[0.5, 0.2]])
    with pytest.raises(ValueError, match="gold_rank must be >= 1"):
        g.update([0.5], [0], [[0.5] * 5])
    with pytest.raises(ValueError, match="lacks field 'gold_rank'"):
        g.update_record({"id": "x", "p_max": [0.5], "top_logprobs": [[0.0]]})
    with pytest.raises(ValueError, match="max_rank must be an integer"):
        CalibrationGrid(max_rank=0)


def test_grid_from_trace_files_streams_and_reports_bad_lines(tmp_path):
    records = make_records(seed=4, n_records=6, n_tokens=30)
    write_traces(tmp_path / "a.jsonl", records[:3])
    write_traces(tmp_path / "b.jsonl", records[3:])
    g = grid_from_traces([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert g.n_tokens == 180 and g.source["models"] == ["synthetic"] and len(g.source["traces"]) == 2
    with open(tmp_path / "a.jsonl", "ab") as fh:
        fh.write(b'{"schema": "sample_smart.teacher_forced/1", "id": "trunc')  # truncated last line
    with pytest.raises(ValueError, match=r"a\.jsonl:4"):
        grid_from_traces([tmp_path / "a.jsonl"])
    with pytest.warns(UserWarning):
        assert grid_from_traces([tmp_path / "a.jsonl"], on_error="skip").n_tokens == 90
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no teacher-forced positions"):
        grid_from_traces([tmp_path / "empty.jsonl"])
