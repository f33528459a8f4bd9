"""Teacher forcing: score every target token of (prompt, target) pairs, stream records.

For each target token t_i (i = 1..T) the model sees ``prompt + t_1..t_{i-1}`` and we
record, under the RAW next-token distribution: the gold id, its rank and logprob,
p_max, the entropy and the top-k ids/logprobs (schema ``sample_smart.teacher_forced/1``,
see ``schemas``). These feed the calibration grid of arXiv 2510.05987 (accuracy of
the gold token at rank r given the p_max decile).

Backends (``transformers_backend``, ``vllm_backend``) only score batches of encoded
examples; this module drives them: streaming input, resume by example id, progress,
and the crash-safe writer. Nothing here trains: the backends run under
``torch.inference_mode`` (transformers) or the engine's own inference path (vLLM).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from .examples import EncodedExample, Example, encode_example
from .reader import completed_ids
from .schemas import TEACHER_FORCED, TEACHER_FORCED_FIELDS, step_columns
from .stats import TokenStats
from .writer import TraceWriter


class TeacherForcingBackend(Protocol):
    name: str  # "transformers" | "vllm"
    entropy_scope: str  # "full" | "top_k"
    top_k: int
    model_name: str
    tokenizer: Any

    def score(self, batch: list[EncodedExample]) -> list[dict]: ...


def teacher_forced_record(
    ex_id: str, *, model: str, backend: str, top_k: int, entropy_scope: str, stats: TokenStats | dict
) -> dict:
    """Build one ``sample_smart.teacher_forced/1`` record from per-token statistics: a
    :class:`TokenStats` or a mapping of its field names to per-position lists (the columns come from
    ``schemas.TEACHER_FORCED_FIELDS``)."""
    cols = step_columns(TEACHER_FORCED_FIELDS, stats)
    return {
        "schema": TEACHER_FORCED,
        "id": str(ex_id),
        "model": str(model),
        "backend": backend,
        "top_k": int(top_k),
        "entropy_scope": entropy_scope,
        "log_base": "e",
        "n_tokens": len(cols["gold_id"]),
        **cols,
    }


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_teacher_forcing(
    examples: Iterable[Example],
    backend: TeacherForcingBackend,
    output: str | os.PathLike,
    *,
    chat_template: bool,
    limit: int | None = None,
    resume: bool = True,
    chunk_size: int = 32,
    progress: bool = True,
    total: int | None = None,
    on_record: Callable[[dict], Any] | None = None,
) -> dict:
    """Score ``examples`` with ``backend`` and append records to ``output``.

    ``resume``: examples whose id already has a complete, schema-valid record in
    ``output`` are skipped (a partial last line left by a crash is removed and redone; a
    complete last record without its final newline is kept and gets the newline; an
    off-schema line is reported with a warning and its example redone).
    ``limit`` caps the number of examples taken from the input (skipped ones included).
    ``on_record`` sees each record after it is written (e.g. a reference-format writer).
    Returns counts: ``{"written", "skipped", "tokens", "bytes"}``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    done = completed_ids(output, schema=TEACHER_FORCED) if resume else set()
    if not resume and os.path.exists(output) and os.path.getsize(output) > 0:
        raise FileExistsError(f"{output} exists; pass resume=True (--resume) to continue it or choose another file")
    seen: set[str] = set()

    def todo() -> Iterator[Example]:
        for i, ex in enumerate(examples):
            if limit is not None and i >= limit:
                return
            if ex.id in seen:
                raise ValueError(f"duplicate example id {ex.id!r} in the input; ids key the resume and must be unique")
            seen.add(ex.id)
            if ex.id in done:
                counts["skipped"] += 1
                bar.update(1)
                continue
            yield ex

    from tqdm.auto import tqdm

    counts = {"written": 0, "skipped": 0, "tokens": 0, "bytes": 0}
    n_total = min(total, limit) if (total is not None and limit is not None) else (limit if total is None else total)
    bar = tqdm(total=n_total, disable=not progress, unit="ex", desc=f"teacher-force [{backend.name}]")
    try:
        with TraceWriter(output) as writer:
            for chunk in _chunks(todo(), chunk_size):
                encoded = [encode_example(backend.tokenizer, ex, chat_template=chat_template) for ex in chunk]
                for rec in backend.score(encoded):
                    writer.write(rec)
                    if on_record is not None:
                        on_record(rec)
                    counts["written"] += 1
                    counts["tokens"] += rec["n_tokens"]
                bar.update(len(chunk))
                bar.set_postfix(tokens=counts["tokens"])
            counts["bytes"] = writer.bytes_written
    finally:
        bar.close()
    return counts
