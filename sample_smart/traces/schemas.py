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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

TEACHER_FORCED = "sample_smart.teacher_forced/1"
GENERATION = "sample_smart.generation/1"
SCHEMAS = (TEACHER_FORCED, GENERATION)

BACKENDS = ("transformers", "vllm")
ENTROPY_SCOPES = ("full", "top_k")
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")
STOP_REASONS = ("stop_string", "regex", "end")


@dataclass(frozen=True)
class StepField:
    """One per-step array of a record: its ``name`` in the record, its element ``kind`` (int, rank,
    logprob, prob, nats, int_row, logprob_row: what the validator checks, and whether it is stored as
    float32) and the per-position quantity it holds (``stat``: a ``traces.stats.TokenStats`` field,
    which both backends and generation fill by that name)."""

    name: str
    kind: str
    stat: str

    @property
    def is_float(self) -> bool:
        return self.kind in FLOAT_KINDS


FLOAT_KINDS = frozenset({"logprob", "prob", "nats", "logprob_row"})

# The per-step arrays of each schema, in record order: the only list of trace fields.
TEACHER_FORCED_FIELDS = (
    StepField("gold_id", "int", "token_id"),
    StepField("gold_rank", "rank", "rank"),
    StepField("gold_logprob", "logprob", "logprob"),
    StepField("p_max", "prob", "p_max"),
    StepField("entropy", "nats", "entropy"),
    StepField("top_ids", "int_row", "top_ids"),
    StepField("top_logprobs", "logprob_row", "top_logprobs"),
)
GENERATION_FIELDS = (
    StepField("token_id", "int", "token_id"),
    StepField("rank", "rank", "rank"),
    StepField("logprob", "logprob", "logprob"),
    StepField("p_max", "prob", "p_max"),
    StepField("top_ids", "int_row", "top_ids"),
    StepField("top_logprobs", "logprob_row", "top_logprobs"),
)
# field -> element kind (what the validators read)
TEACHER_FORCED_STEPS = {f.name: f.kind for f in TEACHER_FORCED_FIELDS}
GENERATION_STEPS = {f.name: f.kind for f in GENERATION_FIELDS}


def step_columns(fields: tuple[StepField, ...], source: Any) -> dict[str, list]:
    """The record's per-step columns from per-position values: ``source`` is a ``TokenStats`` (its
    attributes) or a mapping ``stat -> list``; float kinds are stored as float32 (shortest decimal
    that round-trips), ints as ints."""
    from .stats import f32_lists

    cols: dict[str, list] = {}
    for f in fields:
        values = source[f.stat] if isinstance(source, Mapping) else getattr(source, f.stat)
        if f.is_float:
            cols[f.name] = f32_lists(values) if len(values) else []
        else:
            cols[f.name] = values.tolist() if hasattr(values, "tolist") else [v for v in values]
    return cols


def position_stats(fields: tuple[StepField, ...]) -> dict[str, list]:
    """Empty per-position accumulators, one per ``stat`` the fields need."""
    return {f.stat: [] for f in fields}


# float slack for values that are mathematically <= 0 or <= 1
_EPS = 1e-5


class SchemaError(ValueError):
    """A record does not follow its schema; the message names the field."""


def _require(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise SchemaError(f"field {field!r}: {msg}")


def _first_bad(ok: np.ndarray) -> int:
    """Index of the first False in a boolean array (over the leading axis)."""
    ok = ok.reshape(ok.shape[0], -1).all(axis=1) if ok.ndim > 1 else ok
    return int(np.argmin(ok))


def _check_steps(record: Mapping[str, Any], fields: Mapping[str, str], n: int, top_k: int) -> None:
    """Vectorised checks of the per-step arrays (numpy), naming field and first bad step."""
    for field, kind in fields.items():
        values = record.get(field)
        _require(isinstance(values, list), field, f"must be a list of {n} values, got {type(values).__name__}")
        _require(len(values) == n, field, f"has {len(values)} values, n_tokens is {n}")
        if n == 0:
            continue
        is_row = kind.endswith("_row")
        integer = kind in ("int", "rank", "int_row")
        try:
            arr = np.asarray(values, dtype=np.int64 if integer else np.float64)
        except (TypeError, ValueError, OverflowError):
            arr = None
        shape = (n, top_k) if is_row else (n,)
        if arr is None or arr.shape != shape:
            what = f"a list of top_k={top_k} numbers per step" if is_row else "one number per step"
            raise SchemaError(f"field {field!r}: must hold {what}")
        if integer:
            # reject floats and booleans that numpy would silently convert
            flat = values if not is_row else [x for row in values for x in row]
            _require(all(type(x) is int for x in flat), field, "must hold ints")
        if kind in ("int", "int_row"):
            ok = arr >= 0
            msg = "token ids must be ints >= 0"
        elif kind == "rank":
            ok = arr >= 1
            msg = "rank must be an int >= 1"
        elif kind in ("logprob", "logprob_row"):
            ok = ~np.isnan(arr) & (arr <= _EPS)
            msg = "log-probabilities must be numbers <= 0"
        elif kind == "prob":
            ok = (arr >= 0.0) & (arr <= 1.0 + _EPS)
            msg = "probability must be in [0, 1]"
        else:  # nats
            ok = np.isfinite(arr) & (arr >= -_EPS)
            msg = "entropy must be a finite number >= 0"
        if not ok.all():
            i = _first_bad(ok)
            raise SchemaError(f"field {field!r}: step {i}: {msg}, got {values[i]!r}")
        if kind == "logprob_row" and top_k > 1:
            desc = (arr[:, :-1] >= arr[:, 1:]).all(axis=1)
            if not desc.all():
                raise SchemaError(f"field {field!r}: step {_first_bad(desc)}: must be in descending order")


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
    _require(
        record.get("entropy_scope") in ENTROPY_SCOPES,
        "entropy_scope",
        f"must be one of {ENTROPY_SCOPES}, got {record.get('entropy_scope')!r}",
    )
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
    _require(
        isinstance(stop, Mapping) and stop.get("reason") in STOP_REASONS,
        "stop",
        f"must be an object with reason in {STOP_REASONS}",
    )
    ng = record.get("n_generated")
    _require(isinstance(ng, int) and ng >= n, "n_generated", f"must be an int >= n_tokens ({n})")
    fields = dict(GENERATION_STEPS)
    if mode == "processed_logprobs":
        fields["processed_logprob"] = "logprob"
    _check_steps(record, fields, n, top_k)
    return record


VALIDATORS = {TEACHER_FORCED: validate_teacher_forced, GENERATION: validate_generation}
