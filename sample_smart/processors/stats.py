"""Row statistics shared by every rule, each computed at most once per call.

For a row of logits x (finite or -inf) with p = softmax(x):

- ``m = max_i x_i``, the top logit; ``p_max = exp(m - z)``;
- ``d_i = x_i - m <= 0``, ``e_i = exp(d_i)``, ``s = sum_i e_i`` (so ``p_i = e_i / s``);
- ``z = log sum_i exp(x_i) = m + ln s`` (logsumexp), so ``log p_i = x_i - z``;
- ``H = -sum_i p_i ln p_i`` in nats ``= ln s - (1/s) * sum_i e_i d_i`` (from ``ln p_i = d_i - ln s``).
  The sum is one product of two row vectors already in hand, so the entropy costs no second
  transcendental pass; masked ``-inf`` logits have ``e_i = 0`` and their ``d_i`` is clamped to the
  lowest finite float first, so they contribute ``0`` and no NaN;
- ``sigma`` = population standard deviation of the finite logits (top-n-sigma).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["RowStats", "row_stats", "finite_std", "decile_bin", "row_dot_"]


class RowStats(NamedTuple):
    m: torch.Tensor  # [B] max logit
    z: torch.Tensor | None  # [B] logsumexp
    entropy: torch.Tensor | None  # [B] nats
    e: torch.Tensor | None = None  # [B, V] exp(x - m), kept only when asked (top-p reuses it)
    s: torch.Tensor | None = None  # [B] sum of e


def row_dot_(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i a_i b_i`` per row of two [B, V] tensors, written into ``a`` (no new temporary).

    torch's cascade summation keeps the float32 error near ``eps * log V``; a BLAS dot (plain
    running sums) was measurably less accurate for 150k-token rows."""
    return a.mul_(b).sum(dim=-1)


def row_stats(
    x: torch.Tensor, need_z: bool, need_entropy: bool, m: torch.Tensor | None = None, keep_exp: bool = False
) -> RowStats:
    """Max, logsumexp and entropy of each row of ``x`` ([B, V], float32/64) with one exp pass.

    ``m`` may be given when the row max is already known. ``keep_exp`` also returns ``e = exp(x - m)``
    and ``s = sum e`` for later mass computations (top-p).
    """
    if m is None:
        m = x.amax(dim=-1)
    if not (need_z or need_entropy or keep_exp):
        return RowStats(m, None, None)
    d = x - m.unsqueeze(-1)  # the one vocabulary-sized temporary besides e
    e = d.exp() if (need_entropy or keep_exp) else d.exp_()
    s = e.sum(dim=-1)
    log_s = s.log()
    z = m + log_s
    h = None
    if need_entropy:
        d.clamp_(min=torch.finfo(d.dtype).min)  # -inf -> finite: e * d = 0 there, not NaN
        h = log_s - row_dot_(d, e) / s
    return RowStats(m, z, h, e if keep_exp else None, s)


def finite_std(x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
    """Population standard deviation over the finite entries of each row (0 if < 1 finite).

    One pass: with ``d = x - m`` on the finite entries (``m`` the row max, a shift that keeps the
    sums small), ``var = (sum d^2 - (sum d)^2 / n) / n``, both sums in float64 so the subtraction
    loses nothing that matters (a two-pass float32 std agrees to ~1e-7 relative). Under
    ``torch.compile`` the sums join the row's other reductions in one loop."""
    if m is None:
        m = x.amax(dim=-1)
    finite = torch.isfinite(x)
    d = torch.where(finite, x - m.unsqueeze(-1), 0.0).to(torch.float64)
    n = finite.sum(dim=-1).clamp_(min=1).to(torch.float64)
    s1 = d.sum(dim=-1)
    var = ((d * d).sum(dim=-1) - s1 * s1 / n) / n
    return var.clamp_(min=0.0).sqrt_().to(x.dtype)


def decile_bin(p_max: torch.Tensor) -> torch.Tensor:
    """0-based p_max decile as the reference processor computes it: min(floor(10 p_max), 9).

    Always a valid index 0..9: a NaN p_max (which accepted settings on finite logits never give)
    falls in bin 0 instead of becoming an out-of-range integer."""
    return torch.clamp(torch.floor(p_max.nan_to_num(0.0) * 10.0), min=0.0, max=9.0).to(torch.int64)
