"""Every truncation rule, declared once, as a per-row logit threshold.

A rule keeps the tokens whose (tempered) logit ``x >= tau`` in its row; ``tau = -inf`` removes
nothing. Rules are intersected by taking the row-wise max of their taus, so the whole chain is one
comparison and one write. With ``m`` the max logit and ``z`` the logsumexp,
``p >= q  <=>  x >= z + ln q``.

Each :class:`Rule` in :data:`RULES` says, as data:

- ``keys``: the :class:`~sample_smart.config.DecodeConfig` fields it reads (their parsing and
  ranges are declared once in :data:`sample_smart.config.KNOBS`);
- ``params``: its per-row tensors in :class:`~sample_smart.processors.state.BatchState`, each with
  the **neutral** value a row that does not use the rule gets (its tau is then ``-inf`` or ``<= m``:
  a no-op), and ``row(config, vocab)``, the host function that gives a row's values (None: off);
- ``needs``: the statistics of :class:`Stats` it reads (``z``, ``p_max``, ``entropy``, ``mass``,
  ``values``, ``sigma``), so each is computed once per call and only when some active rule needs it;
- ``candidates``: how many of each row's largest logits it needs (``values``), from its rows' params;
- ``tau(stats, params)``: the threshold.

``BatchState``, the chain (``pipeline.row_thresholds``) and the compiled backend's key are derived
from this table. Adding a decoder is one :data:`sample_smart.config.KNOBS` entry (how a request
spells it), one entry here (what it keeps) and its reference test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch

from sample_smart.config import DecodeConfig
from sample_smart.processors import top_p as _top_p
from sample_smart.processors.stats import decile_bin

__all__ = ["Param", "RULES", "RULES_BY_NAME", "Rule", "STATS", "Stats"]

NEG_INF = float("-inf")
STATS = ("z", "p_max", "entropy", "mass", "values", "sigma")


class Stats(NamedTuple):
    """The shared statistics of the tempered rows ``x`` ([B, V]); None when no active rule needs one."""

    x: torch.Tensor
    m: torch.Tensor  # [B] max logit
    z: torch.Tensor | None  # [B] logsumexp
    p_max: torch.Tensor | None  # [B] exp(m - z)
    entropy: torch.Tensor | None  # [B] nats
    e: torch.Tensor | None  # [B, V] exp(x - m) ("mass")
    s: torch.Tensor | None  # [B] sum of e ("mass")
    values: torch.Tensor | None  # [B, k] the k largest logits, descending
    sigma: torch.Tensor | None  # [B] population std of the finite logits


@dataclass(frozen=True)
class Param:
    """One per-row tensor of a rule: ``[B]`` (``width`` 0) or ``[B, width]``."""

    name: str
    dtype: torch.dtype
    neutral: Any
    width: int = 0


@dataclass(frozen=True)
class Rule:
    """One truncation rule (see the module doc)."""

    name: str
    keys: tuple[str, ...]
    params: tuple[Param, ...]
    row: Callable[[DecodeConfig, int | None], tuple | None]
    needs: frozenset[str]
    tau: Callable[[Stats, Mapping[str, torch.Tensor]], torch.Tensor]
    candidates: Callable[[Sequence[tuple]], int] | None = None
    paper: str = ""


def _where_on(cond: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return torch.where(cond, tau, torch.full_like(tau, NEG_INF))


def _log_or_off(x: float | None) -> tuple | None:
    return (math.log(x),) if x else None


def _kth_largest(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k-th largest logit per row (``values`` sorted descending; k >= 1); ``-inf`` (nothing
    removed) where k exceeds the width of ``values``: a caller that selected fewer candidates than
    a row needs (the fixed programs of ``plans``) finishes that row itself."""
    width = values.shape[-1]
    idx = (k.clamp(min=1, max=width) - 1).unsqueeze(-1)
    return _where_on(k <= width, values.gather(1, idx).squeeze(-1))


# ------------------------------------------------------------------ the rules
def greedy_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """temperature == 0: keep only the argmax (ties at the max all stay): tau = m."""
    return _where_on(p["greedy"], st.m)


def min_p_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Min-p (Nguyen et al. 2024, arXiv 2407.01082): keep p >= min_p * p_max, i.e. x >= m + ln(min_p)."""
    return st.m + p["log_min_p"]


def epsilon_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al. 2022, arXiv 2210.15191): keep p >= eps, i.e. x >= z + ln eps."""
    return st.z + p["log_eps"]


def eta_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Eta sampling (Hewitt et al. 2022): keep p >= eta = min(eps, sqrt(eps) * exp(-H)), H the entropy
    in nats of the (tempered) distribution: ln eta = min(ln eps, ln(eps)/2 - H)."""
    log_eps = p["log_eta"]
    return st.z + torch.minimum(log_eps, 0.5 * log_eps - st.entropy)


def calibrated_epsilon_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Calibrated-epsilon (arXiv 2510.05987): with the fit log_b c = A + B log_b p (B > 0), keep
    b^A p^B >= thr, i.e. ln p >= (ln thr - A ln b) / B = ``cal_log_p`` (prepared on the host)."""
    return st.z + p["cal_log_p"]


def greedy_threshold_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Greedy-Threshold (arXiv 2510.05987): if p_max < t keep only the argmax, else keep all."""
    return _where_on(st.p_max < p["greedy_threshold"], st.m)


def confidence_bin_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Confidence-bin-only (arXiv 2510.05987 ablation): sample only when the p_max decile (1-based,
    1 = [0, 0.1)) equals ``conf_bin``; otherwise greedy. ``conf_bin == 0``: off."""
    conf_bin = p["conf_bin"]
    outside = (conf_bin > 0) & (decile_bin(st.p_max) + 1 != conf_bin)
    return _where_on(outside, st.m)


def top_n_sigma_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Top-n-sigma (Tang et al. 2024, arXiv 2411.07641): keep x >= m - n * sigma, sigma the population
    std of the row's finite logits. ``n == 0``: off."""
    n_sigma = p["n_sigma"]
    return _where_on(n_sigma > 0, st.m - n_sigma * st.sigma)


def top_k_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Top-k: tau = the k-th largest logit (ties at the k-th value stay, as in transformers'
    TopKLogitsWarper). ``k == 0``: off."""
    k = p["top_k"]
    return _where_on(k > 0, _kth_largest(st.values, k))


def dynamic_top_k_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Dynamic top-k / Calibrated-TopK (arXiv 2510.05987): k = ``dyn_k[9 - bin]``, bin the 0-based
    p_max decile, so **index 0 is the highest decile** (as the reference scripts list them); K = 0
    (greedy) is stored as 1. With top-k too the row keeps top-min(k1, k2) (the larger tau)."""
    col = (9 - decile_bin(st.p_max)).unsqueeze(-1)
    k = p["dyn_k"].gather(1, col).squeeze(-1)
    return _where_on(p["dyn_on"], _kth_largest(st.values, k))


def top_p_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751): the smallest prefix of the sorted
    distribution with mass >= p; tau = the logit of its last token (ties stay). ``p >= 1``: off.
    Without a vocabulary sort: see :mod:`sample_smart.processors.top_p`."""
    return _top_p.top_p_tau(st.x, st.m, st.e, st.s, p["top_p"], st.values)


def top_a_tau(st: Stats, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Top-a (BlinkDL's RWKV sampler, also in KoboldAI and text-generation-webui): keep
    p >= a * p_max^2, i.e. x - z >= ln a + 2 (m - z), so tau = 2 m - z + ln a (<= m for a <= 1).
    A confident row (p_max near 1) keeps tokens down to ~a; a flat row keeps almost all.
    ``ln a = -inf``: off."""
    return 2.0 * st.m - st.z + p["log_top_a"]


def _top_k_row(c: DecodeConfig, vocab: int | None) -> tuple | None:
    k = c.top_k or 0
    return None if k == 0 or (vocab is not None and k >= vocab) else (k,)  # k >= V keeps all: off


def _dynamic_top_k_row(c: DecodeConfig, vocab: int | None) -> tuple | None:
    if c.dynamic_top_k is None:
        return None
    ks = [max(1, k) for k in c.dynamic_top_k]  # K_m = 0 means greedy: keep the top 1
    if vocab is not None:
        ks = [min(k, vocab) for k in ks]
    return (ks, True)


def _cal_row(c: DecodeConfig, vocab: int | None) -> tuple | None:
    if c.cal_acc is None:
        return None
    a, b, thr = c.cal_acc
    return ((math.log(thr) - a * math.log(c.cal_acc_base)) / b,)


_F32, _I64, _BOOL = torch.float32, torch.int64, torch.bool

RULES: tuple[Rule, ...] = (
    Rule(
        "greedy",
        ("temperature", "edt_var"),
        (Param("greedy", _BOOL, False),),
        lambda c, v: (True,) if c.is_greedy else None,
        frozenset(),
        greedy_tau,
    ),
    Rule(
        "min_p",
        ("min_p",),
        (Param("log_min_p", _F32, NEG_INF),),
        lambda c, v: _log_or_off(c.min_p),
        frozenset(),
        min_p_tau,
        paper="arXiv 2407.01082",
    ),
    Rule(
        "epsilon",
        ("prob_threshold",),
        (Param("log_eps", _F32, NEG_INF),),
        lambda c, v: _log_or_off(c.prob_threshold),
        frozenset({"z"}),
        epsilon_tau,
        paper="arXiv 2210.15191",
    ),
    Rule(
        "eta",
        ("hewitt_epsilon",),
        (Param("log_eta", _F32, NEG_INF),),
        lambda c, v: _log_or_off(c.hewitt_epsilon),
        frozenset({"z", "entropy"}),
        eta_tau,
        paper="arXiv 2210.15191",
    ),
    Rule(
        "calibrated_epsilon",
        ("cal_acc", "cal_acc_base"),
        (Param("cal_log_p", _F32, NEG_INF),),
        _cal_row,
        frozenset({"z"}),
        calibrated_epsilon_tau,
        paper="arXiv 2510.05987",
    ),
    Rule(
        "greedy_threshold",
        ("greedy_threshold",),
        (Param("greedy_threshold", _F32, 0.0),),
        lambda c, v: (c.greedy_threshold,) if c.greedy_threshold else None,
        frozenset({"p_max"}),
        greedy_threshold_tau,
        paper="arXiv 2510.05987",
    ),
    Rule(
        "confidence_bin",
        ("confidence_bin_only",),
        (Param("conf_bin", _I64, 0),),
        lambda c, v: (c.confidence_bin_only,) if c.confidence_bin_only else None,
        frozenset({"p_max"}),
        confidence_bin_tau,
        paper="arXiv 2510.05987",
    ),
    Rule(
        "top_n_sigma",
        ("top_n_sigma",),
        (Param("n_sigma", _F32, 0.0),),
        lambda c, v: (c.top_n_sigma,) if c.top_n_sigma else None,
        frozenset({"sigma"}),
        top_n_sigma_tau,
        paper="arXiv 2411.07641",
    ),
    Rule(
        "top_k",
        ("top_k",),
        (Param("top_k", _I64, 0),),
        _top_k_row,
        frozenset({"values"}),
        top_k_tau,
        candidates=lambda rows: max(r[0] for r in rows),
    ),
    Rule(
        "dynamic_top_k",
        ("dynamic_top_k",),
        (Param("dyn_k", _I64, 0, width=10), Param("dyn_on", _BOOL, False)),
        _dynamic_top_k_row,
        frozenset({"values", "p_max"}),
        dynamic_top_k_tau,
        candidates=lambda rows: max(max(r[0]) for r in rows),
        paper="arXiv 2510.05987",
    ),
    Rule(
        "top_p",
        ("top_p",),
        (Param("top_p", _F32, 1.0),),
        lambda c, v: (c.top_p,) if c.top_p is not None else None,
        frozenset({"values", "mass", "z"}),
        top_p_tau,
        candidates=lambda rows: _top_p.CANDIDATES,
        paper="arXiv 1904.09751",
    ),
    Rule(
        "top_a",
        ("top_a",),
        (Param("log_top_a", _F32, NEG_INF),),
        lambda c, v: _log_or_off(c.top_a),
        frozenset({"z"}),
        top_a_tau,
    ),
)
RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}
PARAMS: tuple[Param, ...] = tuple(p for r in RULES for p in r.params)
