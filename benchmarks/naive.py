"""The "naive" baseline: the whole chain computed the way the paper's public reference processor
does it (softmax, one full-vocabulary sort, a cumulative sum, then per rule a *count* of kept
sorted tokens; the smallest count wins; the mask is scattered back through the sort indices).

It is independent of ``sample_smart.processors`` (it only reads the per-row parameters from a
:class:`~sample_smart.processors.BatchState`, which is a plain container of tensors), so the
benchmark also uses it as a second implementation to check our outputs against at full size.

Semantics, with p the tempered distribution sorted descending (``sp``), ``c`` its cumulative sum
and rank r = 0, 1, ...: min-p keeps ``sp >= min_p * sp[0]``; epsilon ``sp >= eps``; eta
``sp >= min(eps, sqrt(eps) exp(-H))``; calibrated-epsilon ``ln sp >= cal_log_p``; top-k ``r < k``;
dynamic top-k ``r < K[9 - bin(p_max)]``; top-p ``c - sp < p``; greedy rules ``r < 1``; top-n-sigma
``x >= m - n sigma``; top-a ``sp >= a sp[0]^2``. The kept count is at least 1.
"""

from __future__ import annotations

import torch

from sample_smart.processors import BatchState

__all__ = ["naive_process"]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return torch.special.entr(p).sum(dim=-1)


def naive_process(logits: torch.Tensor, state: BatchState) -> torch.Tensor:
    """Tempered logits with -inf outside each row's kept set (float32 result, in logits' dtype)."""
    x = logits.float()
    big = x.shape[-1] + 1
    P = state.params  # every rule's per-row parameters (neutral where a row does not use the rule)
    if state.any_edt:
        h0 = _entropy(torch.softmax(x, dim=-1))
        t_edt = (state.edt_log_t0 + state.edt_theta * state.edt_log_n / h0.clamp(min=1e-12)).exp()
        t = torch.where(state.edt, t_edt, state.temperature)
    else:
        t = state.temperature
    x = x / t.unsqueeze(-1)
    p = torch.softmax(x, dim=-1)
    sp, idx = torch.sort(p, dim=-1, descending=True)  # the full-vocabulary sort
    c = sp.cumsum(dim=-1)
    p_max = sp[:, 0]
    h = _entropy(p)
    counts = torch.full_like(p_max, big, dtype=torch.int64)

    def cap(n: torch.Tensor) -> None:
        torch.minimum(counts, n, out=counts)

    col = lambda v: v.unsqueeze(-1)
    cap(torch.where(P["greedy"], 1, big))
    cap((sp >= col(p_max * P["log_min_p"].exp())).sum(-1))
    cap((sp >= col(P["log_eps"].exp())).sum(-1))
    eta = torch.minimum(P["log_eta"], 0.5 * P["log_eta"] - h).exp()
    cap((sp >= col(eta)).sum(-1))
    cap((sp.log() >= col(P["cal_log_p"])).sum(-1))
    cap(torch.where(P["top_k"] > 0, P["top_k"], big))
    bin_ = torch.clamp(torch.floor(p_max * 10), 0, 9).long()
    k_dyn = P["dyn_k"].gather(1, col(9 - bin_)).squeeze(-1)
    cap(torch.where(P["dyn_on"], k_dyn, big))
    cap(torch.where(P["top_p"] < 1, (c - sp < col(P["top_p"])).sum(-1), big))
    cap(torch.where((P["greedy_threshold"] > 0) & (p_max < P["greedy_threshold"]), 1, big))
    outside = (P["conf_bin"] > 0) & (bin_ + 1 != P["conf_bin"])
    cap(torch.where(outside, 1, big))
    cap((sp >= col(P["log_top_a"].exp() * p_max.square())).sum(-1))
    if state.uses("top_n_sigma"):
        finite = torch.isfinite(x)
        xs = torch.where(finite, x, torch.nan)
        sigma = (xs - xs.nanmean(-1, keepdim=True)).square().nanmean(-1).sqrt()
        sx = x.gather(1, idx)
        n_sig = (sx >= col(x.amax(-1) - P["n_sigma"] * sigma)).sum(-1)
        cap(torch.where(P["n_sigma"] > 0, n_sig, big))
    counts.clamp_(min=1)
    ranks = torch.arange(x.shape[-1], device=x.device)
    drop_sorted = ranks.unsqueeze(0) >= col(counts)
    drop = torch.empty_like(drop_sorted).scatter_(1, idx, drop_sorted)
    return x.masked_fill_(drop, float("-inf")).to(logits.dtype)
