"""Every truncation rule as a per-row logit threshold.

Each function returns ``tau`` of shape ``[B]``: the row keeps the tokens whose (tempered)
logit ``x >= tau``; ``-inf`` means the rule removes nothing in that row (the rule is off
there). Rules are intersected by taking the row-wise max of their taus, so the whole chain
is one comparison and one write. With ``m`` the max logit and ``z`` the logsumexp,
``p >= q  <=>  x >= z + ln q``.
"""
from __future__ import annotations

import torch

from sample_smart.processors import top_p as _top_p
from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import decile_bin

__all__ = [
    "greedy_tau",
    "min_p_tau",
    "epsilon_tau",
    "eta_tau",
    "calibrated_epsilon_tau",
    "greedy_threshold_tau",
    "confidence_bin_tau",
    "top_n_sigma_tau",
    "top_k_tau",
    "top_p_tau",
]

NEG_INF = float("-inf")


def _where_on(cond: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return torch.where(cond, tau, torch.full_like(tau, NEG_INF))


def greedy_tau(m: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Keep only the argmax (ties at the max all stay): tau = m where ``on``."""
    return _where_on(on, m)


def min_p_tau(m: torch.Tensor, log_min_p: torch.Tensor) -> torch.Tensor:
    """Min-p (Nguyen et al. 2024, arXiv 2407.01082): keep p >= min_p * p_max,
    i.e. x >= m + ln(min_p)."""
    return m + log_min_p


def epsilon_tau(z: torch.Tensor, log_eps: torch.Tensor) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al. 2022, arXiv 2210.15191): keep p >= eps, i.e. x >= z + ln eps."""
    return z + log_eps


def eta_tau(z: torch.Tensor, entropy: torch.Tensor, log_eps: torch.Tensor) -> torch.Tensor:
    """Eta sampling (Hewitt et al. 2022): keep p >= eta = min(eps, sqrt(eps) * exp(-H)),
    H the entropy in nats of the (tempered) distribution: ln eta = min(ln eps, ln(eps)/2 - H)."""
    return z + torch.minimum(log_eps, 0.5 * log_eps - entropy)


def calibrated_epsilon_tau(z: torch.Tensor, cal_log_p: torch.Tensor) -> torch.Tensor:
    """Calibrated-epsilon (arXiv 2510.05987): with the fit log_b c = A + B log_b p (B > 0), keep
    b^A p^B >= thr, i.e. ln p >= (ln thr - A ln b) / B = ``cal_log_p`` (prepared on the host)."""
    return z + cal_log_p


def greedy_threshold_tau(m: torch.Tensor, p_max: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Greedy-Threshold (arXiv 2510.05987): if p_max < t keep only the argmax, else keep all."""
    return _where_on(p_max < threshold, m)


def confidence_bin_tau(m: torch.Tensor, p_max: torch.Tensor, conf_bin: torch.Tensor) -> torch.Tensor:
    """Confidence-bin-only (arXiv 2510.05987 ablation): sample only when the p_max decile
    (1-based, 1 = [0, 0.1)) equals ``conf_bin``; otherwise greedy. ``conf_bin == 0``: off."""
    outside = (conf_bin > 0) & (decile_bin(p_max) + 1 != conf_bin)
    return _where_on(outside, m)


def top_n_sigma_tau(m: torch.Tensor, sigma: torch.Tensor, n_sigma: torch.Tensor) -> torch.Tensor:
    """Top-n-sigma (Tang et al. 2024, arXiv 2411.07641): keep x >= m - n * sigma, sigma the
    population std of the row's finite logits. ``n == 0``: off."""
    return _where_on(n_sigma > 0, m - n_sigma * sigma)


def top_k_tau(x: torch.Tensor, state: BatchState, p_max: torch.Tensor | None,
              values: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k and dynamic top-k with one ``topk`` of the batch's largest k.

    A row's k is the smaller of its ``top_k`` and, with dynamic top-k, ``dyn_k[9 - bin]``
    (index 0 = highest p_max decile, as in the reference scripts); top-k1 intersected with
    top-k2 is top-min(k1, k2). tau = the k-th largest logit (ties at the k-th value stay,
    as in transformers' TopKLogitsWarper). ``values``: the row's largest logits sorted descending
    (at least ``max_top_k`` columns), when already computed."""
    vocab = x.shape[-1]
    kmax = max(1, min(state.max_top_k, vocab))
    if values is None or values.shape[-1] < kmax:
        values = torch.topk(x, kmax, dim=-1, sorted=True).values  # [B, kmax], descending
    big = torch.full_like(state.top_k, vocab + 1)
    k = torch.where(state.top_k > 0, state.top_k, big)
    if state.any_dynamic_top_k:
        assert p_max is not None
        col = (9 - decile_bin(p_max)).unsqueeze(-1)
        k_dyn = state.dyn_k.gather(1, col).squeeze(-1)
        k = torch.minimum(k, torch.where(state.dyn_on, k_dyn, big))
    on = k <= vocab
    idx = (k.clamp(min=1, max=kmax) - 1).unsqueeze(-1)
    return _where_on(on, values.gather(1, idx).squeeze(-1))


def top_p_tau(x: torch.Tensor, m: torch.Tensor, e: torch.Tensor, s: torch.Tensor, top_p: torch.Tensor,
              values: torch.Tensor | None = None) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751): keep the smallest prefix of the
    sorted distribution with mass >= p; tau = the logit of its last token (ties stay). ``p >= 1``: off.
    Computed without a vocabulary sort: see :mod:`sample_smart.processors.top_p`."""
    return _top_p.top_p_tau(x, m, e, s, top_p, values)
