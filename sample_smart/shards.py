"""Shards of a run: ``--shard i/n`` keeps the examples whose id hashes to ``i`` modulo ``n``.

An example belongs to shard ``shard_of(id, n) = int(sha256(str(id))[:16 hex digits], 16) mod n``:
the assignment depends only on the id and ``n`` (not on the file order, the other examples, the
machine or the Python hash seed), so ``n`` jobs with ``--shard 0/n`` ... ``--shard n-1/n`` cover
every example exactly once, and a shard keeps its examples when the data grows. Shards are
balanced in expectation only (a handful of examples can split unevenly).

Ids: lm-eval tasks (``sample-smart eval``) use the document index ``doc_id`` in the task's
evaluation split (``str(doc_id)`` is hashed); traces (``sample-smart trace``) use the example id
of the data file (its ``--id-field``, or the 0-based line index among examples). ``--limit N``
applies first (the first N examples), then the shard keeps its share of them.

``sample-smart merge`` (:mod:`sample_smart.analysis.merge`) joins the shards' outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Shard", "eval_shard_samples", "shard_of"]

T = TypeVar("T")


def shard_of(example_id: Any, count: int) -> int:
    """The shard (0..count-1) of ``example_id``: ``int(sha256(str(id)).hexdigest()[:16], 16) % count``."""
    digest = hashlib.sha256(str(example_id).encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count, count >= 1)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"shard {name} must be an integer, got {v!r}")
        if self.count < 1:
            raise ValueError(f"shard {self}: n must be >= 1")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self}: i must satisfy 0 <= i < n = {self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` -> Shard(i, n); ValueError naming the allowed form otherwise."""
        i, sep, n = str(text).strip().partition("/")
        try:
            if not sep:
                raise ValueError
            index, count = int(i), int(n)
        except ValueError:
            raise ValueError(f"shard {text!r}: expected i/n with integers 0 <= i < n (e.g. 0/4)") from None
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, example_id: Any) -> bool:
        return shard_of(example_id, self.count) == self.index

    def select(self, items: Iterable[T], key=lambda item: item.id) -> Iterator[T]:
        """The items whose ``key(item)`` falls in this shard, in their order."""
        return (item for item in items if self.contains(key(item)))

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def eval_shard_samples(
    tasks: Mapping[str, Any], limit: int | None, shard: Shard
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """``(samples, universe)`` of a sharded lm-eval run: ``samples[task]`` the sorted doc ids of
    this shard among the task's first ``limit`` documents (all without a limit), in the form of
    ``lm_eval.simple_evaluate(samples=...)``; ``universe[task]`` how many documents the shards
    share (doc ids ``0..universe-1``). ValueError when the shard holds no document of a task (lm-eval
    reads an empty selection as "every document")."""
    samples, universe = {}, {}
    for name, task in tasks.items():
        n_docs = len(task.eval_docs)
        total = n_docs if limit is None else min(int(limit), n_docs)
        ids = [d for d in range(total) if shard.contains(d)]
        if not ids:
            raise ValueError(
                f"--shard {shard}: none of the {total} documents of task {name!r} falls in this shard; use fewer shards"
            )
        samples[name], universe[name] = ids, total
    return samples, universe
