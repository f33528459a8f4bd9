"""Metrics of `sample-smart eval`: pass@k against brute-force enumeration, maj@k, extraction."""

from __future__ import annotations

import itertools
import random

import pytest

from sample_smart.analysis.metrics import (
    extract_answer,
    maj_at_k,
    majority_answer,
    normalize_answer,
    pass_at_k,
    question_metrics,
    summarize,
)

GSM8K_REGEX = r"The answer is (\-?[0-9\.\,]+)"


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_pass_at_k_is_the_subset_average(n):
    """Unbiased pass@k = fraction of the k-subsets that contain a correct sample."""
    rng = random.Random(n)
    for _ in range(10):
        correct = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(correct, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, sum(correct), k) == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_majority_ties_go_to_the_earliest_answer_and_none_never_wins():
    assert majority_answer(["3", "5", "5", "3"]) == "3"
    assert majority_answer([None, None, "7"]) == "7"
    assert majority_answer([None, None]) is None
    answers = ["4", None, "9", "9"]
    assert [maj_at_k(answers, "4", k) for k in (1, 2, 3, 4)] == [True, True, True, False]
    with pytest.raises(ValueError, match="k=5"):
        maj_at_k(answers, "4", 5)


def test_extraction_and_normalisation_follow_lm_eval_gsm8k():
    text = "She pays 3 * 4 = 12. The answer is 1,200. Q: next"
    assert extract_answer(text, GSM8K_REGEX) == "1,200."
    assert normalize_answer(extract_answer(text, GSM8K_REGEX)) == "1200"
    assert normalize_answer("$18.00") == "18"
    assert normalize_answer(" 7. ") == "7"
    assert extract_answer("no answer here", GSM8K_REGEX) is None
    # group_select=-1 takes the last match, as lm-eval's flexible-extract
    assert extract_answer("3 then 4 then 5", r"(-?[0-9]+)", -1) == "5"


def test_question_and_run_summaries():
    q1 = question_metrics(["5", "5", "3", None], "5")
    q2 = question_metrics(["2", "1", "1", "1"], "2")
    assert q1["n_correct"] == 2 and q1["distinct_answers"] == 2 and q1["n_invalid"] == 1
    run = summarize([q1, q2])
    assert run["accuracy"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert run["maj_at_k"]["1"] == 1.0  # first answers: 5 (right), 2 (right)
    assert run["maj_at_k"]["4"] == 0.5  # votes: 5 (right), 1 (wrong)
    assert run["pass_at_k"]["4"] == 1.0
    assert run["invalid_rate"] == pytest.approx(1 / 8)
