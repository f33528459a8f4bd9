"""Per-position statistics of the raw next-token distribution (pure torch).

For logits ``z`` (one row per position) and the token ``g`` observed there (gold or
sampled), with ``logprob = log_softmax(z)`` (natural log, raw distribution):

* ``logprob_g = logprob[g]``
* ``rank_g = #{v : logprob[v] >= logprob[g]}`` (1-based, ties counted against ``g``,
  vLLM's convention)
* ``p_max = exp(max_v logprob[v])``
* ``entropy = -sum_v p_v logprob[v]`` in nats over the full vocabulary (terms with
  ``p_v = 0`` count 0)
* top-k ids and logprobs in descending order (``torch.topk``).

These are the quantities of the calibration grid of arXiv 2510.05987 (probability of
the gold token sitting at rank r given p_max). Rows are processed in chunks so the
vocabulary-sized temporaries stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch


def f32_lists(values: Any) -> list:
    """Nested Python lists of the float32 values in ``values``, each float holding the
    shortest decimal that round-trips to its float32 (so JSON stores ~8 digits, not 17,
    and no precision the model computed is lost)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(values, dtype=np.float32)
    return orjson.loads(orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY))


@dataclass
class TokenStats:
    """Statistics for N positions (CPU tensors)."""

    token_id: torch.Tensor  # [N] int64
    rank: torch.Tensor  # [N] int64
    logprob: torch.Tensor  # [N] float32
    p_max: torch.Tensor  # [N] float32
    entropy: torch.Tensor  # [N] float32
    top_ids: torch.Tensor  # [N, k] int64
    top_logprobs: torch.Tensor  # [N, k] float32

    def __len__(self) -> int:
        return int(self.token_id.shape[0])


def token_stats(logits: torch.Tensor, token_ids: torch.Tensor, top_k: int, *, chunk_rows: int = 256) -> TokenStats:
    """Statistics of the raw distributions ``softmax(logits)`` at the tokens ``token_ids``.

    ``logits``: [N, V] (any float dtype, computed in float32); ``token_ids``: [N].
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    n, vocab = logits.shape
    if token_ids.shape != (n,):
        raise ValueError(f"token_ids must be [N={n}], got shape {tuple(token_ids.shape)}")
    if not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be in [1, {vocab}] (the vocabulary size), got {top_k}")
    parts = []
    for start in range(0, n, chunk_rows):
        z = logits[start : start + chunk_rows].float()
        ids = token_ids[start : start + chunk_rows].to(z.device, torch.long)
        lp = torch.log_softmax(z, dim=-1)
        tok_lp = lp.gather(1, ids[:, None])
        rank = (lp >= tok_lp).sum(dim=-1)
        top_lp, top_ids = lp.topk(top_k, dim=-1)
        p = lp.exp()
        entropy = -torch.where(p > 0, p * lp, torch.zeros((), dtype=lp.dtype, device=lp.device)).sum(dim=-1)
        parts.append((ids, rank, tok_lp[:, 0], top_lp[:, 0].exp(), entropy, top_ids, top_lp))
    if not parts:
        empty_f = torch.zeros(0)
        empty_l = torch.zeros(0, dtype=torch.long)
        return TokenStats(
            empty_l, empty_l, empty_f, empty_f, empty_f, torch.zeros(0, top_k, dtype=torch.long), torch.zeros(0, top_k)
        )
    cols = [torch.cat([p[i] for p in parts]).cpu() for i in range(7)]
    return TokenStats(*cols)
