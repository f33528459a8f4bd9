"""The OPE record layouts, one table each, and their validating readers.

A logged record (``RECORD_SCHEMA``) is one response of the logging policy pi_0 to one prompt, in
the field layout other OPE tools read (``prompt_id, prompt, response, total_logprob, target_logps,
judge_score, oracle_label``) plus what makes it exact and reproducible (token ids, counts of tokens
outside each kept set, the judge's raw decision-token probabilities).

Conventions: log-probabilities are **natural logs** of the **processed** distribution of the named
policy (``softmax`` of :func:`sample_smart.processors.process` output: tempered, -inf outside the
kept set), summed over the response tokens. JSON has no infinities, so a log-probability of -inf
(some token outside the policy's kept set: weight 0) is written as the string ``"-inf"``; NaN,
+inf, positive values (> ``LOGP_TOL``) and anything else are refused with ``path:line`` and the
record's id. An oracle record (``ORACLE_SCHEMA``) is one response of a target policy actually run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sample_smart.io_checks import InputFileError, is_finite_number, is_int, iter_json_lines

RECORD_SCHEMA = "sample_smart.ope/1"
ORACLE_SCHEMA = "sample_smart.ope_oracle/1"
NEG_INF = "-inf"
LOGP_TOL = 1e-4  # a sum of log-probabilities is <= 0; float rounding may leave a tiny positive value


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_prob(v: Any) -> bool:
    return is_finite_number(v) and 0.0 <= float(v) <= 1.0 + 1e-9


def is_int_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(is_int(t) and t >= 0 for t in v)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def check_logp(v: Any) -> str | None:
    """None when ``v`` is a valid stored log-probability, else why not."""
    if v == NEG_INF:
        return None
    if v is None:
        return "NaN or missing (a JSON null: orjson writes NaN as null)"
    if isinstance(v, str) or not is_finite_number(v):
        return f"not a finite number or {NEG_INF!r} (got {v!r}; NaN and +inf are refused)"
    if float(v) > LOGP_TOL:
        return f"{v!r} is positive (a log-probability is <= 0)"
    return None


def encode_logp(x: float) -> float | str:
    """A log-probability as stored: the float, or ``"-inf"``; ValueError for NaN/+inf."""
    if math.isnan(x) or x == math.inf:
        raise ValueError(f"log-probability {x!r} cannot be stored (NaN or +inf): a teacher-forcing bug")
    return NEG_INF if x == -math.inf else float(x)


def decode_logp(v: float | str) -> float:
    return -math.inf if v == NEG_INF else float(v)


def is_logp_map(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(k, str) for k in v)


# field -> (check, what it must be): the only list of each layout's fields
RECORD_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "schema": (lambda v: v == RECORD_SCHEMA, f"{RECORD_SCHEMA!r}"),
    "prompt_id": (is_str, "a string"),
    "sample_index": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "prompt": (is_str, "a string (pi_0's prompt text)"),
    "response": (is_str, "a string"),
    "response_token_ids": (is_int_list, "a non-empty list of token ids"),
    "total_logprob": (lambda v: check_logp(v) is None, "a log-probability (<= 0, or '-inf')"),
    "target_logps": (is_logp_map, "an object {policy: log-probability}"),
    "n_outside": (lambda v: isinstance(v, dict) and all(is_int(x) and x >= 0 for x in v.values()), "{policy: int}"),
    "judge_score": (is_prob, "a probability in [0, 1]"),
    "judge_mass": (is_prob, "a probability in [0, 1]"),
    "oracle_label": (is_bool, "true or false"),
    "run_key": (is_str, "a string"),
}
ORACLE_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "schema": (lambda v: v == ORACLE_SCHEMA, f"{ORACLE_SCHEMA!r}"),
    "policy": (is_str, "a policy name"),
    "prompt_id": (is_str, "a string"),
    "sample_index": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "response": (is_str, "a string"),
    "response_token_ids": (lambda v: isinstance(v, list), "a list of token ids"),
    "judge_score": (is_prob, "a probability in [0, 1]"),
    "judge_mass": (is_prob, "a probability in [0, 1]"),
    "oracle_label": (is_bool, "true or false"),
    "run_key": (is_str, "a string"),
}
LAYOUTS = {RECORD_SCHEMA: RECORD_FIELDS, ORACLE_SCHEMA: ORACLE_FIELDS}


def record_problem(rec: Any, schema: str) -> str | None:
    """None when ``rec`` is a valid record of ``schema``, else a message naming the field and record."""
    if not isinstance(rec, Mapping):
        return f"expected a JSON object, got {type(rec).__name__}"
    who = f"record {rec.get('prompt_id')!r}#{rec.get('sample_index')!r}"
    if "policy" in rec:
        who += f" policy {rec.get('policy')!r}"
    for name, (check, allowed) in LAYOUTS[schema].items():
        if name not in rec:
            return f"{who}: field {name!r} is missing (must be {allowed})"
        if name == "total_logprob" and check_logp(rec[name]) is not None:
            return f"{who}: field 'total_logprob': {check_logp(rec[name])}"
        if not check(rec[name]):
            shown = repr(rec[name])
            return f"{who}: field {name!r}: must be {allowed}, got {shown[:80]}"
    if schema == RECORD_SCHEMA:
        for field in ("target_logps",):
            for pol, v in rec[field].items():
                why = check_logp(v)
                if why is not None:
                    return f"{who}: field {field}.{pol}: {why}"
    return None


def iter_records(path: str | os.PathLike, schema: str = RECORD_SCHEMA) -> Iterator[tuple[int, dict]]:
    """``(line, record)`` of a JSONL file of ``schema``; the first bad line raises
    :class:`~sample_smart.io_checks.InputFileError` ``path:line: record ...: field ...: why``."""
    for lineno, rec in iter_json_lines(path):
        why = record_problem(rec, schema)
        if why is not None:
            raise InputFileError(path, lineno, why)
        yield lineno, rec


def read_records(path: str | os.PathLike, schema: str = RECORD_SCHEMA) -> list[dict]:
    return [rec for _, rec in iter_records(path, schema)]


def done_keys(path: str | os.PathLike, schema: str, run_key: str) -> set[tuple]:
    """Keys of the valid records already in ``path`` (resume): ``(prompt_id, sample_index)``, with
    the policy first for oracle records. A missing file gives an empty set; a record of another run
    (different settings: ``run_key``) is an error, so a rerun never mixes two runs in one file.
    An unterminated last line (a crash mid-write) is not counted: the writer cuts it off."""
    if not os.path.exists(path):
        return set()
    keys: set[tuple] = set()
    for lineno, rec in iter_json_lines(path, on_error="skip"):
        if record_problem(rec, schema) is not None:
            continue
        if rec["run_key"] != run_key:
            raise InputFileError(
                path,
                lineno,
                "this file holds a run with other settings (run_key differs); use another --output-dir "
                "or the same settings to resume",
            )
        key = (rec["prompt_id"], rec["sample_index"])
        keys.add((rec["policy"], *key) if schema == ORACLE_SCHEMA else key)
    return keys
