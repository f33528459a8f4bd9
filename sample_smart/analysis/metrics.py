"""Accuracy metrics over repeated samples: exact match, maj@k, pass@k, share correct, distinct answers.

For one question with ``n`` sampled answers ``a_1..a_n`` (in repeat order) and gold ``g``:

* exact match of one sample: ``normalize(a_i) == normalize(g)``; an answer the extraction
  regex did not find is ``None`` and never correct;
* **maj@k**: majority vote over the first ``k`` answers (self-consistency, Wang et al. 2023):
  the most frequent non-None answer among ``a_1..a_k``, ties broken by the earliest first
  occurrence; correct when it matches ``g``; all-None is wrong;
* **pass@k**: probability that at least one of ``k`` answers drawn without replacement from the
  ``n`` is correct, the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374):
  ``pass@k = 1 - C(n - c, k) / C(n, k)``, ``c`` = number of correct answers;
* **share correct**: ``c / n`` (mean accuracy over all samples);
* **distinct answers**: number of different non-None normalised answers.

Run-level values are means over questions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "extract_answer",
    "maj_at_k",
    "majority_answer",
    "normalize_answer",
    "pass_at_k",
    "question_metrics",
    "summarize",
]

_IGNORE = re.compile(r"[,$]")


def normalize_answer(text: Any) -> str | None:
    """Canonical form for comparison: strip, lower-case, drop ``,`` and ``$`` and a trailing ``.``
    (lm-eval's gsm8k ``regexes_to_ignore``); numbers compare by value (``"5.0" == "5"``)."""
    if text is None:
        return None
    s = _IGNORE.sub("", str(text)).strip().lower()
    s = re.sub(r"\.$", "", s).strip()
    try:
        value = float(s)
    except ValueError:
        return s or None
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


def extract_answer(text: str, pattern: str | re.Pattern | None, group_select: int = 0) -> str | None:
    """The answer in a generated ``text``: lm-eval's regex filter semantics (the ``group_select``-th
    match; for a pattern with groups, the first non-empty group), ``None`` when nothing matches.
    Without a pattern the whole stripped text is the answer."""
    if pattern is None:
        return text.strip() or None
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    matches = regex.findall(text)
    if not matches:
        return None
    try:
        match = matches[group_select]
    except IndexError:
        return None
    if isinstance(match, tuple):
        match = next((m for m in match if m), "")
    return match.strip() or None


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-None answer; ties go to the one that appeared first; None if none."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def maj_at_k(answers: Sequence[str | None], gold: str | None, k: int) -> bool:
    """Majority vote over the first ``k`` answers (normalised strings) equals ``gold``."""
    if not 1 <= k <= len(answers):
        raise ValueError(f"k={k} is invalid: allowed 1..{len(answers)} (the number of samples)")
    vote = majority_answer(answers[:k])
    return vote is not None and vote == gold


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021); 1.0 when n - c < k."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def question_metrics(answers: Sequence[str | None], gold: str | None) -> dict[str, Any]:
    """Per-question metrics of normalised ``answers`` (repeat order) against normalised ``gold``."""
    n = len(answers)
    correct = [a is not None and a == gold for a in answers]
    c = sum(correct)
    return {
        "n": n,
        "n_correct": c,
        "correct": correct,
        "share_correct": c / n,
        "majority": majority_answer(answers),
        "maj_at_k": {k: maj_at_k(answers, gold, k) for k in range(1, n + 1)},
        "pass_at_k": {k: pass_at_k(n, c, k) for k in range(1, n + 1)},
        "distinct_answers": len({a for a in answers if a is not None}),
        "n_invalid": sum(a is None for a in answers),
    }


def summarize(per_question: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Run-level means of :func:`question_metrics` outputs (all with the same n)."""
    if not per_question:
        raise ValueError("no questions to summarize")
    ns = {q["n"] for q in per_question}
    if len(ns) != 1:
        raise ValueError(f"questions have different numbers of samples: {sorted(ns)}")
    n = ns.pop()
    m = len(per_question)
    mean = lambda xs: float(sum(xs)) / m
    return {
        "n_questions": m,
        "repeats": n,
        "accuracy": mean(q["share_correct"] for q in per_question),
        "first_sample_accuracy": mean(q["correct"][0] for q in per_question),
        "maj_at_k": {str(k): mean(q["maj_at_k"][k] for q in per_question) for k in range(1, n + 1)},
        "pass_at_k": {str(k): mean(q["pass_at_k"][k] for q in per_question) for k in range(1, n + 1)},
        "mean_distinct_answers": mean(q["distinct_answers"] for q in per_question),
        "invalid_rate": float(sum(q["n_invalid"] for q in per_question)) / (m * n),
    }
