"""Traces of vLLM generations: per generated token, its raw rank and probability.

For each generated token t at step s we record (schema ``sample_smart.generation/1``):
the id, its rank ``#{v : logprob_v >= logprob_t}`` and logprob under the RAW
distribution (before temperature and any truncation), the top-k ids/logprobs and
p_max of that raw distribution; when the engine runs with
``logprobs_mode="processed_logprobs"`` also ``processed_logprob``, the logprob of t
under the distribution it was actually sampled from. Per sequence: the vLLM request
id, the prompt id, the sample index, and the config (sample_smart settings from
``extra_args`` plus vLLM's own sampling fields).

How: the request asks for ``logprobs=top_k`` (flat form, so the sampled token's own
rank is kept). In raw mode those are the raw values and one pass suffices. In
processed mode they are processed; the raw values then come from a second pass that
scores ``prompt + generated tokens`` with ``prompt_logprobs=top_k`` (prompt logprobs
are always raw), which is exact because it replays the same prefix.

Tracing stops where ``stop.TraceStop`` says (stop strings or regex on decoded text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .schemas import GENERATION, GENERATION_FIELDS, position_stats, step_columns
from .stop import TraceStop
from .vllm_logprobs import check_top_k, engine_info, position_values

_SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "seed", "max_tokens", "stop")


@dataclass(frozen=True)
class GenerationPrompt:
    id: str
    prompt_ids: list[int]


def request_config(params: Any) -> dict:
    """The settings a sequence was generated with: sample_smart's and vLLM's own."""
    from sample_smart.integrations.vllm import config_from_params

    vllm_fields = {}
    for f in _SAMPLING_FIELDS:
        v = getattr(params, f, None)
        vllm_fields[f] = list(v) if isinstance(v, (list, tuple)) else v
    return {"sample_smart": config_from_params(params).to_dict(), "vllm": vllm_fields}


def _step_columns(container: Any, token_ids: Sequence[int], offset: int, top_k: int) -> dict[str, list]:
    values = position_stats(GENERATION_FIELDS)
    for i, tok in enumerate(token_ids):
        for stat, value in position_values(container, offset + i, tok, top_k).items():
            values[stat].append(value)
    return step_columns(GENERATION_FIELDS, values)


def trace_generations(
    llm: Any,
    prompts: Sequence[GenerationPrompt],
    params: Any | Sequence[Any],
    *,
    top_k: int = 20,
    stop: TraceStop | None = None,
    model_name: str | None = None,
) -> Iterator[dict]:
    """Generate for ``prompts`` and yield one generation record per sequence.

    ``params``: one ``vllm.SamplingParams`` for all prompts or one per prompt (e.g. from
    ``sample_smart.integrations.vllm.sampling_params(config, max_tokens=..., n=...)``);
    their ``logprobs`` is set to ``top_k`` (and ``flat_logprobs`` on) here.
    """
    from vllm.inputs import TokensPrompt

    check_top_k(llm, top_k)
    info = engine_info(llm)
    mode = info["logprobs_mode"]
    if mode not in ("raw_logprobs", "processed_logprobs"):
        raise ValueError(
            "generation traces need the engine's logprobs_mode to be 'raw_logprobs' or 'processed_logprobs', "
            f"got {mode!r}"
        )
    stop = stop or TraceStop()
    per_prompt = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
    if len(per_prompt) != len(prompts):
        raise ValueError(f"got {len(per_prompt)} SamplingParams for {len(prompts)} prompts")
    traced_params = []
    for p in per_prompt:
        q = p.clone()
        q.logprobs = top_k
        q.flat_logprobs = True
        traced_params.append(q)
    outs = llm.generate([TokensPrompt(prompt_token_ids=g.prompt_ids) for g in prompts], traced_params, use_tqdm=False)
    tokenizer = llm.get_tokenizer()
    model = model_name or info["model"]

    pending: list[tuple[dict, GenerationPrompt, list[int]]] = []
    for g, q, out in zip(prompts, traced_params, outs):
        config = request_config(q)
        for j, seq in enumerate(out.outputs):
            ids = list(seq.token_ids)
            n_traced, stop_info = stop.cut(tokenizer, ids)
            traced = ids[:n_traced]
            cols = _step_columns(seq.logprobs, traced, 0, top_k)
            rec = {
                "schema": GENERATION,
                "request_id": str(out.request_id),
                "prompt_id": g.id,
                "sample_index": int(getattr(seq, "index", j)),
                "model": model,
                "backend": "vllm",
                "logprobs_mode": mode,
                "config": config,
                "top_k": top_k,
                "log_base": "e",
                "n_generated": len(ids),
                "n_tokens": n_traced,
                "stop": stop_info,
                "text": tokenizer.decode(traced, skip_special_tokens=False),
                **cols,
            }
            pending.append((rec, g, traced))

    if mode == "processed_logprobs":
        _replace_with_raw(llm, pending, top_k, info["max_model_len"])
    for rec, _, _ in pending:
        yield rec


def _replace_with_raw(llm: Any, pending: list, top_k: int, max_model_len: int) -> None:
    """Processed mode: keep the sampled token's processed logprob, take everything else
    from a raw re-scoring of prompt + traced tokens (prompt logprobs are raw)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    todo = [(rec, g, traced) for rec, g, traced in pending if traced]
    for rec, _, traced in pending:
        rec["processed_logprob"] = list(rec["logprob"])
    if not todo:
        return
    for rec, g, traced in todo:
        if len(g.prompt_ids) + len(traced) + 1 > max_model_len:
            raise ValueError(
                f"prompt {g.id!r}: re-scoring prompt + {len(traced)} traced tokens needs "
                f"{len(g.prompt_ids) + len(traced) + 1} positions, above max_model_len={max_model_len}"
            )
    sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k, flat_logprobs=True, detokenize=False)
    outs = llm.generate(
        [TokensPrompt(prompt_token_ids=g.prompt_ids + traced) for _, g, traced in todo], sp, use_tqdm=False
    )
    for (rec, g, traced), out in zip(todo, outs):
        raw = _step_columns(out.prompt_logprobs, traced, len(g.prompt_ids), top_k)
        rec.update(raw)
