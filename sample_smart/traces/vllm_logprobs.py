"""Read vLLM's per-position logprobs (prompt or sampled) into plain lists.

vLLM (v1) returns, per position, the observed token (prompt token or sampled token)
with its logprob and its rank ``#{v : logprob_v >= logprob_token}``, followed by the
top-k entries with ranks 1..k. With ``SamplingParams(flat_logprobs=True)`` these come
as a ``FlatLogprobs`` whose first entry per position is the observed token, so its
computed rank survives even when it is also in the top-k; with the dict form a token
in the top-k gets its top-k position as rank (equal except for exact ties). Both forms
are read here. Which distribution the values describe depends on the engine's
``logprobs_mode`` for sampled tokens; prompt logprobs are always raw (prompt tokens
skip the sampling processors).
"""

from __future__ import annotations

import math
from typing import Any


def position_entries(container: Any, pos: int, token_id: int, top_k: int) -> tuple[float, int, list[int], list[float]]:
    """``(token_logprob, token_rank, top_ids, top_logprobs)`` at position ``pos``."""
    if hasattr(container, "start_indices"):  # FlatLogprobs
        s, e = container.start_indices[pos], container.end_indices[pos]
        if e - s < 1 + top_k:
            raise ValueError(f"vLLM returned {e - s - 1} logprobs at position {pos}, expected top_k={top_k}")
        if container.token_ids[s] != token_id:
            raise ValueError(
                f"vLLM logprobs at position {pos} are for token {container.token_ids[s]}, expected {token_id}"
            )
        return (
            float(container.logprobs[s]),
            int(container.ranks[s]),
            [int(t) for t in container.token_ids[s + 1 : s + 1 + top_k]],
            [float(x) for x in container.logprobs[s + 1 : s + 1 + top_k]],
        )
    entries = container[pos]
    if not entries or token_id not in entries:
        raise ValueError(f"vLLM logprobs at position {pos} do not include token {token_id}")
    tok = entries[token_id]
    top = sorted(((v.rank, tid, v.logprob) for tid, v in entries.items() if v.rank is not None and v.rank <= top_k))
    if len(top) < top_k:
        raise ValueError(f"vLLM returned {len(top)} top logprobs at position {pos}, expected top_k={top_k}")
    return float(tok.logprob), int(tok.rank), [t for _, t, _ in top], [float(lp) for _, _, lp in top]


def position_values(container: Any, pos: int, token_id: int, top_k: int, entropy: bool = False) -> dict:
    """The per-position quantities of ``schemas.StepField.stat`` at ``pos`` (vLLM's logprobs):
    token_id, rank, logprob, p_max, top_ids, top_logprobs, and with ``entropy`` the top-k entropy."""
    lp, rank, top_ids, top_lps = position_entries(container, pos, token_id, top_k)
    out = {
        "token_id": int(token_id),
        "rank": rank,
        "logprob": lp,
        "p_max": math.exp(top_lps[0]),
        "top_ids": top_ids,
        "top_logprobs": top_lps,
    }
    if entropy:
        out["entropy"] = topk_entropy(top_lps)
    return out


def topk_entropy(top_logprobs: list[float]) -> float:
    """``-sum_{v in top-k} p_v ln p_v`` (nats): the part of the entropy the top-k carries."""
    return float(-sum(math.exp(lp) * lp for lp in top_logprobs if lp > -math.inf))


def engine_info(llm: Any) -> dict:
    """Model name, max_model_len and logprobs_mode of a ``vllm.LLM``."""
    cfg = llm.llm_engine.model_config
    return {
        "model": str(cfg.model),
        "max_model_len": int(cfg.max_model_len),
        "logprobs_mode": str(getattr(cfg, "logprobs_mode", "raw_logprobs")),
        "max_logprobs": int(getattr(cfg, "max_logprobs", 20)),
    }


def check_top_k(llm: Any, top_k: int) -> None:
    info = engine_info(llm)
    if not 1 <= top_k <= info["max_logprobs"]:
        raise ValueError(
            f"top_k must be in [1, {info['max_logprobs']}] for this engine (its max_logprobs); got {top_k}. "
            "Start the engine with max_logprobs >= top_k."
        )
