"""Versioned JSONL record schemas of sample_smart traces.

Every record is one JSON object on one line with a ``"schema"`` field
``"sample_smart.<kind>/<version>"``. Conventions shared by all records:

* all log-probabilities are natural logs (``"log_base": "e"``) of the **raw**
  distribution, i.e. ``log_softmax`` of the model's logits before temperature or any
  truncation; a processed value is always named ``processed_*``;
* a rank is 1-based over the full vocabulary and counts ties against the token:
  ``rank(t) = #{v : logprob(v) >= logprob(t)}`` (1 = argmax). This is vLLM's
  convention (``batched_count_greater_than``), so ranks from vLLM and from a plain
  forward pass are comparable;
* ``p_max`` is the top-1 probability ``exp(max_v logprob(v))``;
* ``entropy`` is in nats, ``H = -sum_v p_v ln p_v``; over the full vocabulary when
  ``entropy_scope == "full"``; when ``"top_k"`` only the top-k probabilities are known
  and the field holds the partial sum ``-sum_{v in top-k} p_v ln p_v`` (a lower bound
  of H, not renormalised).

Teacher-forced record (``TEACHER_FORCED``), one per (prompt, target) example; the
calibration code (arXiv 2510.05987, section 3: accuracy of the gold token at rank r
given p_max) reads it::

    {"schema": "sample_smart.teacher_forced/1", "id": str, "model": str,
     "backend": "transformers"|"vllm", "top_k": int, "entropy_scope": "full"|"top_k",
     "log_base": "e", "n_tokens": T,
     "gold_id": [T], "gold_rank": [T], "gold_logprob": [T], "p_max": [T],
     "entropy": [T], "top_ids": [T][top_k], "top_logprobs": [T][top_k]}

Generation record (``GENERATION``), one per generated sequence; per traced step the
sampled token's id, raw rank, raw logprob, p_max, top-k ids/logprobs, and when the
engine ran in processed-logprobs mode also the processed logprob of the sampled token::

    {"schema": "sample_smart.generation/1", "request_id": str, "prompt_id": str,
     "sample_index": int, "model": str, "backend": "vllm",
     "logprobs_mode": "raw_logprobs"|"processed_logprobs", "config": {...},
     "top_k": int, "log_base": "e", "n_generated": int, "n_tokens": T,
     "stop": {"reason": "stop_string"|"regex"|"end", "match": str|null},
     "text": str (decoded traced tokens), "token_id": [T], "rank": [T],
     "logprob": [T], "p_max": [T], "top_ids": [T][top_k], "top_logprobs": [T][top_k],
     "processed_logprob": [T] (only in processed mode)}
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

TEACHER_FORCED = "sample_smart.teacher_forced/1"
GENERATION = "sample_smart.generation/1"
SCHEMAS = (TEACHER_FORCED, GENERATION)

BACKENDS = ("transformers", "vllm")
ENTROPY_SCOPES = ("full", "top_k")
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")
STOP_REASONS = ("stop_string", "regex", "end")

# Per-step parallel arrays of each schema: field -> element kind.
TEACHER_FORCED_STEPS = {
    "gold_id": "int",
    "gold_rank": "rank",
    "gold_logprob": "logprob",
    "p_max": "prob",
    "entropy": "nats",
    "top_ids": "int_row",
    "top_logprobs": "logprob_row",
}
GENERATION_STEPS = {
    "token_id": "int",
    "rank": "rank",
    "logprob": "logprob",
    "p_max": "prob",
    "top_ids": "int_row",
    "top_logprobs": "logprob_row",
}

# float slack for values that are mathematically <= 0 or <= 1
_EPS = 1e-5


class SchemaError(ValueError):
    """A record does not follow its schema; the message names the field."""


def _require(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise SchemaError(f"field {field!r}: {msg}")


def _check_steps(record: Mapping[str, Any], fields: Mapping[str, str], n: int, top_k: int) -> None:
    for field, kind in fields.items():
        values = record.get(field)
        _require(isinstance(values, list), field, f"must be a list of {n} values, got {type(values).__name__}")
        _require(len(values) == n, field, f"has {len(values)} values, n_tokens is {n}")
        for i, v in enumerate(values):
            if kind.endswith("_row"):
                _require(isinstance(v, list) and len(v) == top_k, field,
                         f"step {i}: must be a list of top_k={top_k} values")
                if kind == "logprob_row":
                    _require(all(isinstance(x, (int, float)) and x <= _EPS for x in v), field,
                             f"step {i}: log-probabilities must be numbers <= 0")
                    _require(all(v[j] >= v[j + 1] for j in range(len(v) - 1)), field,
                             f"step {i}: must be in descending order")
                else:
                    _require(all(isinstance(x, int) and x >= 0 for x in v), field,
                             f"step {i}: token ids must be ints >= 0")
            elif kind == "int":
                _require(isinstance(v, int) and v >= 0, field, f"step {i}: token id must be an int >= 0, got {v!r}")
            elif kind == "rank":
                _require(isinstance(v, int) and v >= 1, field, f"step {i}: rank must be an int >= 1, got {v!r}")
            elif kind == "logprob":
                _require(isinstance(v, (int, float)) and v <= _EPS, field,
                         f"step {i}: log-probability must be a number <= 0, got {v!r}")
            elif kind == "prob":
                _require(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 + _EPS, field,
                         f"step {i}: probability must be in [0, 1], got {v!r}")
            elif kind == "nats":
                _require(isinstance(v, (int, float)) and v >= -_EPS and math.isfinite(v), field,
                         f"step {i}: entropy must be a finite number >= 0, got {v!r}")


def _check_header(record: Mapping[str, Any], schema: str) -> tuple[int, int]:
    _require(isinstance(record, Mapping), "schema", "record must be a JSON object")
    _require(record.get("schema") == schema, "schema", f"expected {schema!r}, got {record.get('schema')!r}")
    _require(record.get("log_base") == "e", "log_base", f"must be 'e', got {record.get('log_base')!r}")
    top_k = record.get("top_k")
    _require(isinstance(top_k, int) and top_k >= 1, "top_k", f"must be an int >= 1, got {top_k!r}")
    n = record.get("n_tokens")
    _require(isinstance(n, int) and n >= 0, "n_tokens", f"must be an int >= 0, got {n!r}")
    _require(isinstance(record.get("model"), str), "model", "must be a string")
    return n, top_k


def validate_teacher_forced(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check a teacher-forced record; raise SchemaError naming the field; return it."""
    n, top_k = _check_header(record, TEACHER_FORCED)
    _require(isinstance(record.get("id"), str), "id", f"must be a string, got {record.get('id')!r}")
    _require(record.get("backend") in BACKENDS, "backend", f"must be one of {BACKENDS}, got {record.get('backend')!r}")
    _require(record.get("entropy_scope") in ENTROPY_SCOPES, "entropy_scope",
             f"must be one of {ENTROPY_SCOPES}, got {record.get('entropy_scope')!r}")
    _check_steps(record, TEACHER_FORCED_STEPS, n, top_k)
    return record


def validate_generation(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check a generation record; raise SchemaError naming the field; return it."""
    n, top_k = _check_header(record, GENERATION)
    for field in ("request_id", "prompt_id", "text"):
        _require(isinstance(record.get(field), str), field, "must be a string")
    _require(isinstance(record.get("config"), Mapping), "config", "must be an object")
    mode = record.get("logprobs_mode")
    _require(mode in LOGPROBS_MODES, "logprobs_mode", f"must be one of {LOGPROBS_MODES}, got {mode!r}")
    stop = record.get("stop")
    _require(isinstance(stop, Mapping) and stop.get("reason") in STOP_REASONS, "stop",
             f"must be an object with reason in {STOP_REASONS}")
    ng = record.get("n_generated")
    _require(isinstance(ng, int) and ng >= n, "n_generated", f"must be an int >= n_tokens ({n})")
    fields = dict(GENERATION_STEPS)
    if mode == "processed_logprobs":
        fields["processed_logprob"] = "logprob"
    _check_steps(record, fields, n, top_k)
    return record


VALIDATORS = {TEACHER_FORCED: validate_teacher_forced, GENERATION: validate_generation}
