"""Studies relating per-token confidence to final correctness (arXiv 2510.05987, section 5).

Inputs: a run's samples file (``<stem>_samples.jsonl``, one line per question x repeat, with
``correct`` and ``trace_id``) joined with its generation traces (``<stem>_traces.jsonl``,
schema ``sample_smart.generation/1``: per generated token the **raw** p_max and the raw rank
of the sampled token, rank 1 = argmax, natural-log logprobs). Each study returns a JSON-able
dict; :mod:`sample_smart.analysis.plots` draws it.

* ``low_confidence_study``: accuracy versus the number of low-confidence tokens in the
  answer, a token being low-confidence when its raw ``p_max < threshold``; counts binned by
  ``LOW_CONF_EDGES`` (left-closed, right-open).
* ``mean_rank_study``: accuracy by the mean raw rank of the sampled tokens, binned by
  ``MEAN_RANK_EDGES`` (left-closed, right-open; 1.0 = all tokens were the argmax).
* ``confidence_vote_study``: majority vote over all k samples versus votes conditioned on
  confidence: (a) only the most confident half of the samples (the ceil(k/2) with the
  fewest low-confidence tokens, ties to the earlier repeat), (b) votes weighted by the sample's mean token logprob,
  ``w = exp(mean_t log p(x_t))`` (the geometric-mean probability of its tokens).
* ``bin_curves_study``: majority-vote accuracy versus k for runs restricted to one
  confidence bin each (``--confidence-bin-only b``), one curve per bin: the paper's figure
  of ten curves.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sample_smart.analysis.metrics import majority_answer
from sample_smart.io_checks import (
    InputFileError,
    bad_field,
    is_finite_number,
    is_int,
    iter_json_lines,
    json_bool,
    read_json_file,
)

__all__ = [
    "LOW_CONF_EDGES",
    "MEAN_RANK_EDGES",
    "bin_curves_study",
    "confidence_vote_study",
    "join_traces",
    "load_metrics",
    "load_samples",
    "low_confidence_study",
    "mean_rank_study",
    "traces_path_for",
]

LOW_CONF_EDGES = (0, 1, 2, 3, 5, 9, 17, math.inf)
MEAN_RANK_EDGES = (1.0, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, math.inf)


# Fields of a samples line (written by ``sample-smart eval``) that the studies read:
# name -> (check, what it must be). ``correct`` must be a real JSON boolean (or 0/1): the
# string "false" is a bad line, not a correct answer.
SAMPLE_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "correct": (lambda v: json_bool(v) is not None, "a JSON boolean (true/false) or 0/1"),
    "trace_id": (lambda v: isinstance(v, str), "a string (run sample-smart eval with --write-traces)"),
    "task": (lambda v: isinstance(v, str), "a string"),
    "doc_id": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool), "an int or a string"),
    "repeat": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "answer": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "gold": (lambda v: v is None or isinstance(v, str), "a string or null"),
}
TRACE_JOIN_FIELDS = ("correct", "trace_id")
VOTE_FIELDS = ("correct", "trace_id", "task", "doc_id", "repeat", "answer", "gold")


def load_samples(path: str | Path, require: Sequence[str] = TRACE_JOIN_FIELDS) -> list[dict[str, Any]]:
    """The rows of a samples JSONL file, each checked to hold the ``require`` fields with the
    types of ``SAMPLE_FIELDS`` (``correct`` becomes a bool); a bad line raises
    ``InputFileError`` (a ValueError) ``path:line: what``."""
    rows = []
    for i, row in iter_json_lines(path):
        if not isinstance(row, dict):
            raise InputFileError(path, i, f"expected a JSON object, got {type(row).__name__}")
        for key in require:
            check, allowed = SAMPLE_FIELDS[key]
            if key not in row:
                raise InputFileError(path, i, f"missing field {key!r} (fields present: {sorted(row)[:12]})")
            if not check(row[key]):
                raise bad_field(path, key, row[key], allowed, line=i)
        if "correct" in row:
            row["correct"] = json_bool(row["correct"])
        rows.append(row)
    if not rows:
        raise InputFileError(path, None, "no samples")
    return rows


def _probability(v: Any) -> bool:
    return is_finite_number(v) and 0.0 <= v <= 1.0


def _curve(v: Any) -> bool:
    """``{"1": x, "2": y, ...}``: keys positive ints as strings, values probabilities."""
    return (
        isinstance(v, dict)
        and len(v) > 0
        and all(isinstance(k, str) and k.isdigit() and int(k) >= 1 for k in v)
        and all(_probability(x) for x in v.values())
    )


# Fields of an eval ``*_metrics.json`` (``sample-smart eval``) that analyze reads.
METRICS_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "label": (lambda v: isinstance(v, str), "a string"),
    "wall_time_s": (is_finite_number, "a number (seconds)"),
    "decoder": (lambda v: isinstance(v, dict), "an object"),
    "metrics.repeats": (lambda v: is_int(v) and v >= 1, "an int >= 1"),
    "metrics.accuracy": (_probability, "a number in [0, 1]"),
    "metrics.maj_at_k": (_curve, 'an object {"k": accuracy in [0, 1]} with keys k >= 1'),
    "metrics.pass_at_k": (_curve, 'an object {"k": probability in [0, 1]} with keys k >= 1'),
    "metrics.mean_distinct_answers": (lambda v: is_finite_number(v) and v >= 0, "a number >= 0"),
    "metrics.invalid_rate": (_probability, "a number in [0, 1]"),
}
TABLE_FIELDS = tuple(k for k in METRICS_FIELDS if k != "decoder")
BIN_CURVE_FIELDS = ("metrics.maj_at_k", "metrics.accuracy")


def load_metrics(path: str | Path, require: Sequence[str] = tuple(METRICS_FIELDS)) -> dict[str, Any]:
    """An eval metrics JSON file, checked to hold the ``require`` fields (dotted paths) with the
    types of ``METRICS_FIELDS``; ``InputFileError`` (a ValueError) naming the file and field."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise InputFileError(
            path, None, f"expected a JSON object (a sample-smart eval *_metrics.json), got {type(data).__name__}"
        )
    return check_metrics(data, path, require)


def check_metrics(data: dict[str, Any], path: str | Path, require: Sequence[str]) -> dict[str, Any]:
    """``data`` after checking its ``require`` fields against ``METRICS_FIELDS`` (see ``load_metrics``)."""
    for name in require:
        value: Any = data
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise InputFileError(path, None, f"missing field {name!r} (not a sample-smart eval *_metrics.json?)")
            value = value[part]
        check, allowed = METRICS_FIELDS[name]
        if not check(value):
            raise bad_field(path, name, value, allowed)
    return data


def traces_path_for(samples_path: str | Path) -> Path:
    """``<stem>_traces.jsonl`` beside ``<stem>_samples.jsonl``."""
    p = Path(samples_path)
    if not p.name.endswith("_samples.jsonl"):
        raise ValueError(f"{p}: expected a '<stem>_samples.jsonl' file from sample-smart eval")
    return p.with_name(p.name[: -len("_samples.jsonl")] + "_traces.jsonl")


def join_traces(samples: Sequence[Mapping[str, Any]], traces_path: str | Path) -> list[dict[str, Any]]:
    """Each sample with per-token ``p_max``, ``rank``, ``logprob`` from its trace (by ``trace_id``)."""
    from sample_smart.traces import iter_generation

    if not Path(traces_path).is_file():
        raise FileNotFoundError(f"{traces_path}: no traces (run sample-smart eval with --write-traces)")
    by_id = {}
    for rec in iter_generation(traces_path):
        by_id[rec["prompt_id"]] = rec
    out = []
    for s in samples:
        rec = by_id.get(s.get("trace_id"))
        if rec is None:
            raise ValueError(
                f"sample doc {s.get('doc_id')} repeat {s.get('repeat')}: trace {s.get('trace_id')!r} "
                f"not in {traces_path}"
            )
        out.append({**s, "p_max": rec["p_max"], "rank": rec["rank"], "logprob": rec["logprob"]})
    return out


def _bin_index(value: float, edges: Sequence[float]) -> int:
    for i in range(len(edges) - 1):
        if edges[i] <= value < edges[i + 1]:
            return i
    raise ValueError(f"value {value} outside the bin edges {list(edges)}")


def _label(lo: float, hi: float, integer: bool) -> str:
    if integer:
        hi_i = None if math.isinf(hi) else int(hi) - 1
        return f"{int(lo)}" if hi_i == int(lo) else (f"{int(lo)}+" if hi_i is None else f"{int(lo)}-{hi_i}")
    return f"[{lo:g}, {'inf' if math.isinf(hi) else f'{hi:g}'})"


def _binned_accuracy(
    values: Iterable[float], correct: Iterable[bool], edges: Sequence[float], integer: bool
) -> list[dict]:
    n = [0] * (len(edges) - 1)
    c = [0] * (len(edges) - 1)
    for v, ok in zip(values, correct):
        i = _bin_index(v, edges)
        n[i] += 1
        c[i] += bool(ok)
    return [
        {
            "bin": _label(edges[i], edges[i + 1], integer),
            "lo": edges[i],
            "hi": None if math.isinf(edges[i + 1]) else edges[i + 1],
            "n": n[i],
            "n_correct": c[i],
            "accuracy": c[i] / n[i] if n[i] else None,
        }
        for i in range(len(n))
    ]


def low_conf_count(p_max: Sequence[float], threshold: float) -> int:
    """Number of tokens whose raw p_max is below ``threshold``."""
    return sum(p < threshold for p in p_max)


def low_confidence_study(joined: Sequence[Mapping[str, Any]], threshold: float = 0.5) -> dict[str, Any]:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold} is invalid: allowed 0 < threshold <= 1 (a raw p_max)")
    counts = [low_conf_count(s["p_max"], threshold) for s in joined]
    return {
        "study": "accuracy_vs_low_confidence_tokens",
        "definition": f"low-confidence token: raw p_max < {threshold} (distribution before temperature/truncation)",
        "bin_edges": "token counts, left-closed right-open " + str(list(LOW_CONF_EDGES)),
        "threshold": threshold,
        "n_samples": len(joined),
        "bins": _binned_accuracy(counts, (s["correct"] for s in joined), LOW_CONF_EDGES, integer=True),
    }


def mean_rank_study(joined: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ranks = [sum(s["rank"]) / len(s["rank"]) if s["rank"] else 1.0 for s in joined]
    return {
        "study": "accuracy_by_mean_rank",
        "definition": "mean over the sample's generated tokens of the raw rank of the sampled token (1 = argmax)",
        "bin_edges": "left-closed right-open " + str([e if not math.isinf(e) else "inf" for e in MEAN_RANK_EDGES]),
        "n_samples": len(joined),
        "bins": _binned_accuracy(ranks, (s["correct"] for s in joined), MEAN_RANK_EDGES, integer=False),
    }


def _weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> str | None:
    score: dict[str, float] = defaultdict(float)
    for a, w in zip(answers, weights):
        if a is not None:
            score[a] += w
    if not score:
        return None
    best = max(score.values())
    return next(a for a in answers if a is not None and score[a] == best)


def confidence_vote_study(joined: Sequence[Mapping[str, Any]], threshold: float = 0.5) -> dict[str, Any]:
    by_q: dict[tuple, list] = defaultdict(list)
    for s in joined:
        by_q[(s["task"], s["doc_id"])].append(s)
    plain = filtered = weighted = 0
    for rows in by_q.values():
        rows = sorted(rows, key=lambda r: r["repeat"])
        gold = rows[0]["gold"]
        answers = [r["answer"] for r in rows]
        lows = [low_conf_count(r["p_max"], threshold) for r in rows]
        half = sorted(range(len(rows)), key=lambda i: (lows[i], i))[: (len(rows) + 1) // 2]
        keep = [answers[i] for i in sorted(half)]
        weights = [math.exp(sum(r["logprob"]) / len(r["logprob"])) if r["logprob"] else 1.0 for r in rows]
        plain += majority_answer(answers) == gold and gold is not None
        filtered += majority_answer(keep) == gold and gold is not None
        weighted += _weighted_vote(answers, weights) == gold and gold is not None
    m = len(by_q)
    k = Counter(len(v) for v in by_q.values()).most_common(1)[0][0]
    return {
        "study": "majority_vote_conditioned_on_confidence",
        "definition": {
            "majority": "plain vote over all samples of the question",
            "low_conf_filtered": "vote over the most confident half (ceil(k/2)) of the question's samples: "
            f"fewest tokens "
            f"with raw p_max < {threshold}, ties to the earlier repeat",
            "logprob_weighted": "vote weighted by exp(mean raw logprob of the sample's tokens)",
        },
        "n_questions": m,
        "samples_per_question": k,
        "accuracy": {"majority": plain / m, "low_conf_filtered": filtered / m, "logprob_weighted": weighted / m},
    }


def bin_curves_study(metrics_files: Sequence[str | Path]) -> dict[str, Any]:
    """maj@k versus k for runs each restricted to one confidence bin (from their metrics JSON)."""
    curves = []
    for path in metrics_files:
        data = load_metrics(path, ("decoder",))
        b = data["decoder"].get("confidence_bin_only")
        if b is None:
            raise ValueError(f"{path}: the run was not restricted to a confidence bin (--confidence-bin-only)")
        if not (is_int(b) and 1 <= b <= 10):
            raise bad_field(path, "decoder.confidence_bin_only", b, "an int in 1..10 (1 = p_max in [0, 0.1))")
        check_metrics(data, path, BIN_CURVE_FIELDS)
        maj = data["metrics"]["maj_at_k"]
        ks = sorted(maj, key=int)
        curves.append(
            {
                "bin": b,
                "p_max_range": [(b - 1) / 10, b / 10],
                "file": str(path),
                "k": [int(k) for k in ks],
                "maj_at_k": [maj[k] for k in ks],
                "accuracy": data["metrics"]["accuracy"],
            }
        )
    if not curves:
        raise ValueError("no metrics files given")
    curves.sort(key=lambda c: c["bin"])
    return {
        "study": "majority_vote_vs_k_by_confidence_bin",
        "definition": (
            "each run samples only where the raw p_max falls in its decile bin (1 = [0, 0.1)), greedy elsewhere"
        ),
        "curves": curves,
    }
