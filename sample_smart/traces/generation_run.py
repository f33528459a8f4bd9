"""Drive generation tracing over a prompt file: chunks, resume, progress, writers.

Resume is keyed by prompt id: a prompt whose ``n`` sequences are all in the output is
skipped on a rerun; a prompt cut short by a crash (fewer than ``n`` sequences written)
is generated again in full and a warning says so (its earlier sequences stay in the file,
they are complete records). Request ``i`` of the data file gets seed ``seed + i``, so a
resumed run samples what the uninterrupted run would have.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any

from sample_smart.io_checks import refuse_overwrite

from .examples import load_examples, render_prompt
from .generation import GenerationPrompt, trace_generations
from .reader import read_records
from .reference import ReferenceRankWriters
from .schemas import GENERATION
from .stop import TraceStop
from .writer import TraceWriter


def _sequences_written(path: str | os.PathLike) -> Counter:
    """Complete, schema-valid generation records per prompt id; other lines are warned about."""
    done: Counter = Counter()
    if os.path.exists(path):
        for rec in read_records(path, "skip", schema=GENERATION, validate=True):
            done[str(rec["prompt_id"])] += 1
    return done


def run_generation_traces(
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    llm: Any = None,
    model: str | None = None,
    config: Any = None,
    top_k: int = 20,
    n: int = 1,
    max_tokens: int = 128,
    seed: int | None = None,
    temperature: float = 1.0,
    stop: TraceStop | None = None,
    logprobs_mode: str = "raw_logprobs",
    chat_template: bool = True,
    id_field: str = "id",
    prompt_field: str = "prompt",
    limit: int | None = None,
    resume: bool = True,
    progress: bool = True,
    batch_size: int = 16,
    reference_dir: str | os.PathLike | None = None,
    low_conf_threshold: float = 1.0,
    sampled_threshold: float = 0.1,
    shard: Any = None,
    engine_args: dict[str, Any] | None = None,
) -> dict:
    """Generate for the prompts in ``data`` and append generation records to ``output``.

    ``llm``: an existing ``vllm.LLM`` (its own logprobs_mode is used); otherwise one is
    started with ``make_llm(model, logprobs_mode=..., **engine_args)`` (``engine_args``: checked
    overrides, see :mod:`sample_smart.integrations.engine_args`). ``shard``: a
    :class:`sample_smart.shards.Shard`; only its prompts (among the first ``limit``) are
    generated, each with the seed it has in the whole run. Returns counts.
    """
    from tqdm.auto import tqdm

    from sample_smart.integrations.vllm import sampling_params

    if batch_size < 1 or n < 1 or max_tokens < 1:
        raise ValueError(f"batch_size, n and max_tokens must be >= 1, got {batch_size}, {n}, {max_tokens}")
    refuse_overwrite(output, [data])
    if not resume and os.path.exists(output) and os.path.getsize(output) > 0:
        raise FileExistsError(f"{output} exists; resume it or choose another file")
    if llm is None:
        from sample_smart.integrations.vllm_engine import make_llm

        llm = make_llm(model, logprobs_mode=logprobs_mode, max_logprobs=max(20, top_k), **(engine_args or {}))
    elif engine_args:
        raise ValueError(f"engine arguments {sorted(engine_args)} cannot apply to a given llm")
    tokenizer = llm.get_tokenizer()
    written = _sequences_written(output) if resume else Counter()
    refs = (
        ReferenceRankWriters(reference_dir, low_conf_threshold=low_conf_threshold, sampled_threshold=sampled_threshold)
        if reference_dir is not None
        else None
    )
    counts = {"sequences": 0, "skipped_prompts": 0, "tokens_traced": 0, "tokens_generated": 0, "bytes": 0}
    examples = list(load_examples(data, id_field=id_field, prompt_field=prompt_field, target_field=None))
    if limit is not None:
        examples = examples[:limit]
    if len({e.id for e in examples}) != len(examples):
        raise ValueError("duplicate prompt ids in the input; ids key the resume and must be unique")
    todo = []
    if shard is not None:
        counts["other_shards"] = 0
    for i, ex in enumerate(examples):  # i: the index in the whole run (request i gets seed + i)
        if shard is not None and not shard.contains(ex.id):
            counts["other_shards"] += 1
            continue
        if written[ex.id] >= n:
            counts["skipped_prompts"] += 1
            continue
        if written[ex.id]:
            warnings.warn(
                f"prompt {ex.id!r} has {written[ex.id]} of {n} sequences from an interrupted run; "
                f"generating all {n} again"
            )
        todo.append((i, ex))
    bar = tqdm(total=len(todo), disable=not progress, unit="prompt", desc="trace generate")
    try:
        with TraceWriter(output) as writer:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                prompts = [
                    GenerationPrompt(ex.id, render_prompt(tokenizer, ex.prompt, chat_template=chat_template))
                    for _, ex in chunk
                ]
                params = [
                    sampling_params(
                        config,
                        n=n,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        seed=None if seed is None else seed + i,
                    )
                    for i, _ in chunk
                ]
                for rec in trace_generations(llm, prompts, params, top_k=top_k, stop=stop):
                    writer.write(rec)
                    if refs is not None:
                        refs.write(rec)
                    counts["sequences"] += 1
                    counts["tokens_traced"] += rec["n_tokens"]
                    counts["tokens_generated"] += rec["n_generated"]
                bar.update(len(chunk))
            counts["bytes"] = writer.bytes_written
    finally:
        bar.close()
        if refs is not None:
            refs.close()
    if refs is not None:
        counts["low_conf_ranks"] = str(refs.low_conf_path)
        counts["all_sampled_ranks"] = str(refs.all_sampled_path)
    return counts
