"""Token-by-token comparison of language models: exact statistics over the full vocabulary.

Pure torch/numpy (no transformers, no vLLM). For one position, model M's next-token
distribution is ``P_M = softmax(z_M)`` over the whole vocabulary (raw: no temperature, no
truncation), natural logs throughout, so entropies, KL and log-probabilities are in **nats**.

Per position (see :func:`sample_smart.traces.stats.token_stats`, reused here):

* ``entropy = H(P_M) = -sum_v P_M(v) ln P_M(v)`` (nats);
* ``p_next = P_M(x)`` for the observed next token x, ``logprob_next = ln P_M(x)`` (nats),
  ``rank_next = #{v : P_M(v) >= P_M(x)}`` (1 = argmax, ties counted against x);
* ``p_max = max_v P_M(v)``, ``top_id = argmax_v P_M(v)``.

Per aligned position and pair (base B, other Q), every model scoring the same prefix
(teacher forcing):

* ``kl = KL(P_B || P_Q) = sum_v P_B(v) (ln P_B(v) - ln P_Q(v))`` (nats; terms with
  ``P_B(v) = 0`` count 0), log-softmax and sum in float64 (from the model's logits), so rounding
  stays near 1e-16 and a model against itself gives exactly 0;
* ``delta_p = P_Q(x) - P_B(x)`` for the observed next token x;
* ``same_top = [argmax P_B == argmax P_Q]``.

:func:`kl_readout` summarises them as llama.cpp's ``perplexity --kl-divergence`` does
(mean KL +- standard error and percentiles, Delta p mean +- se, percentiles and RMS, "same top
p" share +- binomial se, ln PPL ratio), but exactly: llama.cpp stores only the top of the
base distribution, here every KL is a sum over the full vocabulary. Conventions:
``ln(PPL_Q / PPL_B) = mean over positions of (-ln P_Q(x) + ln P_B(x))``; standard errors are
``std(ddof=1) / sqrt(n)`` (binomial ``sqrt(s (1 - s) / n)`` for the share); percentiles are
numpy's linear interpolation between order statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sample_smart.traces.stats import TokenStats, token_stats

# llama.cpp's list, highest first
KL_PERCENTILES: tuple[float, ...] = (100.0, 99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1, 0.0)
SUMMARY_PERCENTILES: tuple[float, ...] = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)


def _percentile_name(q: float) -> str:
    return {100.0: "max", 50.0: "median", 0.0: "min"}.get(q, f"p{q:g}")


def percentiles(values: Any, qs: Sequence[float] = KL_PERCENTILES) -> dict[str, float | None]:
    """``{"max": .., "p99.9": .., ..., "median": .., "min": ..}`` (numpy linear interpolation);
    None for every entry when ``values`` is empty."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {_percentile_name(q): None for q in qs}
    got = np.percentile(arr, list(qs))
    return {_percentile_name(q): float(v) for q, v in zip(qs, got)}


def mean_se(values: Any) -> tuple[float | None, float | None]:
    """(mean, standard error = std(ddof=1) / sqrt(n)); se is None for n < 2, both None for n = 0."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None, None
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    return float(arr.mean()), se


def position_stats(logits: torch.Tensor, next_ids: torch.Tensor | Sequence[int]) -> TokenStats:
    """Per-position entropy (nats), logprob/rank of ``next_ids``, p_max and top id (``top_ids[:, 0]``)
    of ``softmax(logits)``; ``logits`` [N, V]. A thin call of ``traces.stats.token_stats`` (top-1)."""
    ids = torch.as_tensor(next_ids, dtype=torch.long)
    return token_stats(logits, ids, 1)


def pair_stats(
    logits_base: torch.Tensor,
    logits_other: torch.Tensor,
    next_ids: torch.Tensor | Sequence[int],
    *,
    chunk_rows: int = 128,
) -> dict[str, np.ndarray]:
    """Exact per-position ``kl`` (nats), ``delta_p`` and ``same_top`` for aligned rows (module docstring).

    ``logits_base``, ``logits_other``: [N, V] over the same vocabulary, row i of both scoring
    the same prefix; ``next_ids``: [N] the token observed after that prefix.
    """
    if logits_base.dim() != 2 or logits_base.shape != logits_other.shape:
        raise ValueError(
            "aligned logits must both be [N, V] of one shape, got "
            f"{tuple(logits_base.shape)} and {tuple(logits_other.shape)}"
        )
    ids = torch.as_tensor(next_ids, dtype=torch.long)
    n = logits_base.shape[0]
    if ids.shape != (n,):
        raise ValueError(f"next_ids must be [N={n}], got shape {tuple(ids.shape)}")
    kl, dp, same = [], [], []
    for start in range(0, n, chunk_rows):
        sl = slice(start, start + chunk_rows)
        lb = torch.log_softmax(logits_base[sl].double(), dim=-1)
        lq = torch.log_softmax(logits_other[sl].double(), dim=-1)
        pb = lb.exp()
        terms = torch.where(pb > 0, pb * (lb - lq), torch.zeros((), dtype=lb.dtype, device=lb.device))
        kl.append(terms.sum(-1).cpu())
        g = ids[sl].to(lb.device)[:, None]
        dp.append((lq.gather(1, g).exp() - lb.gather(1, g).exp())[:, 0].cpu())
        same.append((lb.argmax(-1) == lq.argmax(-1)).cpu())
        del lb, lq, pb, terms
    if not kl:
        return {"kl": np.zeros(0), "delta_p": np.zeros(0), "same_top": np.zeros(0, dtype=bool)}
    return {"kl": torch.cat(kl).numpy(), "delta_p": torch.cat(dp).numpy(), "same_top": torch.cat(same).numpy()}


def kl_readout(
    kl: Any,
    delta_p: Any,
    same_top: Any,
    logprob_base: Any,
    logprob_other: Any,
) -> dict[str, Any]:
    """llama.cpp's ``--kl-divergence`` summary for one pair, exact (module docstring for the conventions).

    All arguments are per aligned position: KL (nats), Delta p = p_Q(x) - p_B(x), same-top flags,
    and ln p_B(x), ln p_Q(x) of the observed next token (nats).
    """
    kl = np.asarray(kl, dtype=np.float64)
    dp = np.asarray(delta_p, dtype=np.float64)
    same = np.asarray(same_top, dtype=bool)
    lb = np.asarray(logprob_base, dtype=np.float64)
    lq = np.asarray(logprob_other, dtype=np.float64)
    n = kl.size
    if not (dp.size == same.size == lb.size == lq.size == n):
        raise ValueError(
            f"per-position arrays differ in length: kl {n}, delta_p {dp.size}, same_top {same.size}, "
            f"logprob_base {lb.size}, logprob_other {lq.size}"
        )
    kl_mean, kl_se = mean_se(kl)
    dp_mean, dp_se = mean_se(dp)
    rms = float(math.sqrt(np.mean(dp**2))) if n else None
    # se of the RMS by the delta method: se(mean(dp^2)) / (2 RMS)
    rms_se = None
    if n > 1 and rms:
        rms_se = float(np.std(dp**2, ddof=1) / math.sqrt(n) / (2 * rms))
    share = float(same.mean()) if n else None
    share_se = float(math.sqrt(share * (1 - share) / n)) if n else None
    ratio, ratio_se = mean_se(lb - lq)  # -ln p_Q + ln p_B
    return {
        "n_positions": int(n),
        "units": "nats (natural log); delta_p and same_top are probabilities/shares",
        "kl_definition": "KL(P_base || P_other) = sum_v P_base(v) (ln P_base(v) - ln P_other(v)), full vocabulary",
        "mean_kl": kl_mean,
        "mean_kl_se": kl_se,
        "kl_percentiles": percentiles(kl),
        "delta_p_definition": "p_other(next) - p_base(next), raw distributions",
        "mean_delta_p": dp_mean,
        "mean_delta_p_se": dp_se,
        "rms_delta_p": rms,
        "rms_delta_p_se": rms_se,
        "delta_p_percentiles": percentiles(dp),
        "same_top_share": share,
        "same_top_share_se": share_se,
        "ln_ppl_ratio_definition": (
            "ln(PPL_other / PPL_base) = mean over positions of (-ln p_other(next) + ln p_base(next))"
        ),
        "ln_ppl_ratio": ratio,
        "ln_ppl_ratio_se": ratio_se,
        "ppl_base": float(math.exp(-lb.mean())) if n else None,
        "ppl_other": float(math.exp(-lq.mean())) if n else None,
    }


def describe(values: Any) -> dict[str, Any]:
    """n, mean, std (ddof=1), min, max and the :data:`SUMMARY_PERCENTILES` of ``values``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "percentiles": percentiles(arr, SUMMARY_PERCENTILES),
        }
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else None,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "percentiles": percentiles(arr, SUMMARY_PERCENTILES),
    }


def pair_readouts(
    per_model: Mapping[str, Mapping[str, Any]], pairs: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """:func:`kl_readout` for every pair key ``"BASE|OTHER"`` of ``pairs`` (columns ``kl``, ``delta_p``,
    ``same_top``), taking ``logprob_next`` of both models from ``per_model``."""
    out = {}
    for key, cols in pairs.items():
        base, other = key.split("|")
        out[key] = {
            "base": base,
            "other": other,
            **kl_readout(
                cols["kl"],
                cols["delta_p"],
                cols["same_top"],
                per_model[base]["logprob_next"],
                per_model[other]["logprob_next"],
            ),
        }
    return out
