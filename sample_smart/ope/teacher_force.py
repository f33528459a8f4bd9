"""Processed log-probabilities of fixed responses under decoders, by teacher forcing.

For a prompt x and a response y = (y_1..y_T) (the token ids pi_0 sampled), one forward pass of the
model over x + y gives the raw logits rows l_t (row t predicts y_t). For a decoder d:

    log pi_d(y | x) = sum_t log softmax(process(l_t, d))[y_t]

with :func:`sample_smart.processors.process` (temperature and truncation; -inf outside the kept
set, so a token outside it makes the sum -inf: the importance weight is then exactly 0), natural
log. Every policy, the logging policy included, goes through :func:`processed_logprobs` on the
same rows tensor, so the clone of the logging policy gets a log-weight of exactly 0.

Determinism: transformers, fp32, CPU, ``inference_mode``, **batch size 1** (one sequence per
forward pass, no padding: the batch composition never changes a row), one torch thread
(:func:`fixed_threads`: a fixed reduction order), the same prompt token ids
vLLM was given, on top of one fixed key/value cache of the few-shot prefix all prompts share
(:class:`PrefixForcer`: the prefix is computed once, so the CPU cost is the question and the
response). A prompt change (``system_prompt``) needs its own forward pass with its prompt.
Decoders whose kept set depends on earlier steps do not exist here (every rule reads one row).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sample_smart.config import DecodeConfig

TF_THREADS = 1


@contextmanager
def fixed_threads(n: int = TF_THREADS):
    """Run the block with ``n`` torch intra-op threads, then restore the count.

    A fixed thread count fixes the reduction order; on a loaded 2-core machine a 1-thread forward is
    also ~10x faster than 2 threads fighting other processes (measured here: 0.7-1.4 s vs 14-21 s for
    ~60 tokens on a cached prefix). When a vLLM CPU engine runs **in this process** it owns the
    threads (it replaces ``torch.set_num_threads`` by a no-op and pins them to cores): the block then
    runs with vLLM's threads, unchanged (deterministic still: the count does not change within a
    run). :func:`~sample_smart.ope.prepare.prepare` starts its own engine in a subprocess."""
    import torch

    if torch.set_num_threads is not torch._C.set_num_threads:  # an in-process vLLM CPU worker
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load_forcer(model: Any = None) -> "PrefixForcer":
    """A :class:`PrefixForcer` on ``model`` (default: the embedded model), loaded in fp32 on the CPU
    by the library's transformers backend."""
    from sample_smart.traces.transformers_backend import TransformersTeacherForcer

    tf = TransformersTeacherForcer(model, device="cpu", dtype="float32", batch_size=1, top_k=1)
    return PrefixForcer(tf.model, tf.tokenizer)


class PrefixForcer:
    """Teacher forcing with a cached shared prefix (the few-shot examples every prompt starts with).

    ``logits(prompt_ids, response_ids)``: the raw fp32 logits rows [T, V] predicting the response,
    from one forward pass over ``(prompt_ids + response_ids)[len(prefix):]`` on top of a copy of the
    prefix's key/value cache (computed once, never modified). The prefix is registered with
    :meth:`add_prefix` (one per prompt variant, e.g. with and without a system prompt); the longest
    registered prefix that is a strict prefix of the prompt is used, none when none is. Every call
    with the same ids runs the same computation (batch size 1, the same cache), so it is
    deterministic; it differs from a full forward pass only by float rounding."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._prefixes: list[tuple[tuple[int, ...], Any]] = []

    def add_prefix(self, prefix_ids: Sequence[int]) -> None:
        import torch

        ids = tuple(int(t) for t in prefix_ids)
        if not ids or any(p == ids for p, _ in self._prefixes):
            return
        with torch.inference_mode(), fixed_threads():
            past = self.model(input_ids=torch.tensor([ids]), use_cache=True).past_key_values
        self._prefixes.append((ids, past))
        self._prefixes.sort(key=lambda e: -len(e[0]))

    def logits(self, prompt_ids: Sequence[int], response_ids: Sequence[int]):
        import copy

        import torch

        prompt_ids, response_ids = [int(t) for t in prompt_ids], [int(t) for t in response_ids]
        if not response_ids:
            raise ValueError("an empty response has no tokens to score")
        full = prompt_ids + response_ids
        start, past = 0, None
        for ids, cache in self._prefixes:
            if len(ids) < len(prompt_ids) and tuple(prompt_ids[: len(ids)]) == ids:
                start, past = len(ids), copy.deepcopy(cache)
                break
        with torch.inference_mode(), fixed_threads():
            out = self.model(input_ids=torch.tensor([full[start:]]), past_key_values=past, use_cache=past is not None)
        lo = len(prompt_ids) - 1 - start  # the row predicting the first response token
        return out.logits[0, lo : lo + len(response_ids)].float()


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The longest common prefix of ``seqs``, cut to leave at least one token of each."""
    if not seqs:
        return []
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return list(first[: max(n, 0)])


def processed_logprobs(
    rows: Any, response_ids: Sequence[int], decoders: Mapping[str, DecodeConfig]
) -> dict[str, tuple[float, int]]:
    """``{name: (log pi_d(y|x), tokens outside d's kept set)}`` from the raw rows (module doc).
    The sum runs in float64 over float32 per-token values; ``rows`` is never modified."""
    import torch

    from sample_smart.processors import process

    if rows.shape[0] != len(response_ids):
        raise ValueError(f"{rows.shape[0]} logits rows for {len(response_ids)} response tokens")
    ids = torch.tensor(list(response_ids), dtype=torch.long).unsqueeze(1)
    out: dict[str, tuple[float, int]] = {}
    with torch.inference_mode():
        for name, cfg in decoders.items():
            processed = process(rows, cfg)  # a new tensor (or rows itself for a no-op decoder)
            token_lp = torch.log_softmax(processed.float(), dim=-1).gather(1, ids).squeeze(1)
            outside = int(torch.isneginf(token_lp).sum())
            total = -math.inf if outside else float(token_lp.double().sum())
            out[name] = (total, outside)
    return out
