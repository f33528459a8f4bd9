"""The decoder-comparison figure of notebook 05, from the committed GSM8K eval result files."""

from __future__ import annotations

import copy

import pytest
from support import REPO

from sample_smart.analysis.decoder_plots import common_k, plot_decoder_comparison
from sample_smart.analysis.studies import TABLE_FIELDS, load_metrics

RUNS = sorted((REPO / "docs/eval/gsm8k").glob("*_metrics.json"))


@pytest.fixture(scope="module")
def rows():
    assert len(RUNS) >= 2
    return [load_metrics(p, TABLE_FIELDS) for p in RUNS]


def test_common_k_is_the_largest_shared_k(rows):
    assert common_k(rows) == min(r["metrics"]["repeats"] for r in rows)
    fewer = copy.deepcopy(rows)
    fewer[0]["metrics"]["maj_at_k"].pop(str(common_k(rows)))
    assert common_k(fewer) == common_k(rows) - 1
    with pytest.raises(ValueError, match="no runs"):
        common_k([])


def test_the_figure_is_written_and_a_missing_k_refused(rows, tmp_path):
    out = plot_decoder_comparison(rows, tmp_path / "d.png")
    assert out == tmp_path / "d.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="k=9"):
        plot_decoder_comparison(rows, tmp_path / "e.png", k=9)
    assert not (tmp_path / "e.png").exists()
