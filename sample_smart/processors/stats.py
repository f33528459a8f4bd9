"""Row statistics shared by every rule, each computed at most once per call.

For a row of logits x (finite or -inf) with p = softmax(x):

- ``m = max_i x_i``, the top logit; ``p_max = exp(m - z)``;
- ``z = log sum_i exp(x_i)`` (logsumexp), so ``log p_i = x_i - z``;
- ``H = -sum_i p_i ln p_i`` in nats. With ``e_i = exp(x_i - m)`` and ``s = sum_i e_i``:
  ``H = ln s + (1/s) * sum_i entr(e_i)``, ``entr(e) = -e ln e`` (``entr(0) = 0``, so
  masked ``-inf`` logits contribute nothing and produce no NaN);
- ``sigma`` = population standard deviation of the finite logits (top-n-sigma).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["RowStats", "row_stats", "finite_std", "decile_bin"]


class RowStats(NamedTuple):
    m: torch.Tensor  # [B] max logit
    z: torch.Tensor | None  # [B] logsumexp
    entropy: torch.Tensor | None  # [B] nats


def row_stats(x: torch.Tensor, need_z: bool, need_entropy: bool, m: torch.Tensor | None = None) -> RowStats:
    """Max, logsumexp and entropy of each row of ``x`` ([B, V], float32), with one shared exp pass."""
    if m is None:
        m = x.amax(dim=-1)
    if not (need_z or need_entropy):
        return RowStats(m, None, None)
    e = (x - m.unsqueeze(-1)).exp_()  # one vocabulary-sized temporary, reused below
    s = e.sum(dim=-1)
    log_s = s.log()
    z = m + log_s
    h = None
    if need_entropy:
        h = log_s + torch.special.entr(e.clamp_(min=0.0)).sum(dim=-1) / s
    return RowStats(m, z, h)


def finite_std(x: torch.Tensor) -> torch.Tensor:
    """Population standard deviation over the finite entries of each row (0 if < 1 finite)."""
    finite = torch.isfinite(x)
    count = finite.sum(dim=-1).clamp_(min=1).to(x.dtype)
    xf = torch.where(finite, x, 0.0)
    mean = xf.sum(dim=-1) / count
    centred = torch.where(finite, x - mean.unsqueeze(-1), 0.0)
    return (centred.square_().sum(dim=-1) / count).sqrt_()


def decile_bin(p_max: torch.Tensor) -> torch.Tensor:
    """0-based p_max decile as the reference processor computes it: min(floor(10 p_max), 9)."""
    return torch.clamp(torch.floor(p_max * 10.0), min=0.0, max=9.0).to(torch.int64)
