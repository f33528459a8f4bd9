"""The studies on hand-made inputs: binning, the confidence-conditioned votes, the ten-curve figure."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from sample_smart.analysis.studies import (
    bin_curves_study,
    confidence_vote_study,
    low_confidence_study,
    mean_rank_study,
)
from sample_smart.cli import main


def _sample(doc, repeat, answer, gold, p_max, rank, logprob):
    return {
        "task": "t",
        "doc_id": doc,
        "repeat": repeat,
        "answer": answer,
        "gold": gold,
        "correct": answer == gold,
        "p_max": p_max,
        "rank": rank,
        "logprob": logprob,
    }


def test_low_confidence_and_mean_rank_bins():
    joined = [
        _sample(0, 0, "1", "1", [0.9, 0.95], [1, 1], [-0.1, -0.05]),  # 0 low-conf, mean rank 1
        _sample(0, 1, "2", "1", [0.2, 0.3, 0.9], [3, 1, 1], [-2, -1, -0.1]),  # 2 low-conf, mean rank 5/3
        _sample(1, 0, "4", "4", [0.4] * 20, [1] * 19 + [2], [-1] * 20),  # 20 low-conf, mean rank 1.05
    ]
    low = low_confidence_study(joined, threshold=0.5)
    by_bin = {b["bin"]: (b["n"], b["n_correct"]) for b in low["bins"]}
    assert by_bin["0"] == (1, 1) and by_bin["2"] == (1, 0) and by_bin["17+"] == (1, 1)
    assert sum(b["n"] for b in low["bins"]) == 3
    ranks = {b["bin"]: b["n"] for b in mean_rank_study(joined)["bins"]}
    assert ranks["[1, 1.05)"] == 1 and ranks["[1.05, 1.1)"] == 1 and ranks["[1.5, 2)"] == 1
    with pytest.raises(ValueError, match="threshold=0"):
        low_confidence_study(joined, threshold=0.0)


def test_confidence_conditioned_votes_can_beat_the_plain_vote():
    # Question 0: two confident right answers, three unsure wrong ones that agree.
    confident, unsure = [0.9] * 5, [0.2] * 5
    rows = [_sample(0, r, "7", "7", confident, [1] * 5, [-0.1] * 5) for r in range(2)]
    rows += [_sample(0, r, "8", "7", unsure, [2] * 5, [-3.0] * 5) for r in range(2, 5)]
    study = confidence_vote_study(rows, threshold=0.5)
    assert study["accuracy"] == {"majority": 0.0, "low_conf_filtered": 1.0, "logprob_weighted": 1.0}
    assert study["n_questions"] == 1 and study["samples_per_question"] == 5


def test_bin_curves_from_metrics_files(tmp_path):
    files = []
    for b in (7, 2):
        maj = {str(k): (b + k) / 20 for k in range(1, 5)}
        path = tmp_path / f"bin{b}_metrics.json"
        path.write_text(
            json.dumps({"decoder": {"confidence_bin_only": b}, "metrics": {"maj_at_k": maj, "accuracy": b / 20}})
        )
        files.append(path)
    study = bin_curves_study(files)
    assert [c["bin"] for c in study["curves"]] == [2, 7]
    assert study["curves"][1]["maj_at_k"] == [0.4, 0.45, 0.5, 0.55]
    assert study["curves"][0]["p_max_range"] == pytest.approx([0.1, 0.2])
    result = CliRunner().invoke(main, ["analyze", "bins", *map(str, files), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "confidence_bin_curves.png").read_bytes()[:4] == b"\x89PNG"
    plain = tmp_path / "plain_metrics.json"
    plain.write_text(json.dumps({"decoder": {"min_p": 0.1}, "metrics": {"maj_at_k": {"1": 0.1}}}))
    result = CliRunner().invoke(main, ["analyze", "bins", str(plain)])
    assert result.exit_code == 2 and "--confidence-bin-only" in result.output
    assert not math.isnan(study["curves"][0]["accuracy"])
