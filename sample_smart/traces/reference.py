"""Writers for the reference scripts' file formats (arXiv 2510.05987 code release).

* ``low_conf_ranks_<ts>.jsonl``: one JSON list per generated sequence, the raw ranks of
  the sampled tokens at the traced steps where ``p_max < low_conf_threshold``
  (reference default 1.0, i.e. every step);
* ``all_sampled_ranks_<ts>.jsonl``: one JSON list per sequence, the raw ranks of the
  sampled tokens whose raw probability ``exp(logprob) < sampled_threshold``
  (reference default 0.1);
* teacher-forced ``{"gt": id, "top_ids": [k ids], "top_probs": ["%.8f", ...]}``: one
  line per target token, probabilities (raw, not logs) as 8-decimal strings, as the
  reference logger writes them.

All derive from our own records (``sample_smart.generation/1`` and
``sample_smart.teacher_forced/1``), so they are views, never a second source of truth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .writer import TraceWriter

DEFAULT_LOW_CONF_THRESHOLD = 1.0
DEFAULT_SAMPLED_THRESHOLD = 0.1


def _check_threshold(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ValueError(f"{name} must be a probability in (0, 1], got {value!r}")
    return float(value)


def low_conf_ranks(record: Mapping[str, Any], threshold: float = DEFAULT_LOW_CONF_THRESHOLD) -> list[int]:
    """Ranks of the sampled tokens at steps with ``p_max < threshold``."""
    return [r for r, pm in zip(record["rank"], record["p_max"]) if pm < threshold]


def all_sampled_ranks(record: Mapping[str, Any], threshold: float = DEFAULT_SAMPLED_THRESHOLD) -> list[int]:
    """Ranks of the sampled tokens whose raw probability is below ``threshold``."""
    return [r for r, lp in zip(record["rank"], record["logprob"]) if math.exp(lp) < threshold]


def gt_top_lines(record: Mapping[str, Any]) -> Iterator[dict]:
    """The reference teacher-forced lines of one ``teacher_forced`` record."""
    for gold, ids, lps in zip(record["gold_id"], record["top_ids"], record["top_logprobs"]):
        yield {"gt": int(gold), "top_ids": list(ids), "top_probs": [f"{math.exp(x):.8f}" for x in lps]}


class ReferenceRankWriters:
    """Appends each generation record's ranks to ``low_conf_ranks_<ts>.jsonl`` and
    ``all_sampled_ranks_<ts>.jsonl`` in ``directory`` (``ts`` = UTC ``%Y%m%d_%H%M%S``
    unless given)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        low_conf_threshold: float = DEFAULT_LOW_CONF_THRESHOLD,
        sampled_threshold: float = DEFAULT_SAMPLED_THRESHOLD,
        timestamp: str | None = None,
    ):
        self.low_conf_threshold = _check_threshold("low_conf_threshold", low_conf_threshold)
        self.sampled_threshold = _check_threshold("sampled_threshold", sampled_threshold)
        ts = timestamp or datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
        d = Path(directory)
        self.low_conf_path = d / f"low_conf_ranks_{ts}.jsonl"
        self.all_sampled_path = d / f"all_sampled_ranks_{ts}.jsonl"
        self._low = TraceWriter(self.low_conf_path)
        self._all = TraceWriter(self.all_sampled_path)

    def write(self, record: Mapping[str, Any]) -> None:
        self._low.write(low_conf_ranks(record, self.low_conf_threshold))
        self._all.write(all_sampled_ranks(record, self.sampled_threshold))

    def close(self) -> None:
        self._low.close()
        self._all.close()

    def __enter__(self) -> "ReferenceRankWriters":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReferenceTeacherForcedWriter:
    """Appends the ``{"gt", "top_ids", "top_probs"}`` lines of teacher-forced records."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._w = TraceWriter(self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        for line in gt_top_lines(record):
            self._w.write(line)

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> "ReferenceTeacherForcedWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
