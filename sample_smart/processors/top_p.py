"""Top-p (nucleus) threshold without sorting the vocabulary.

Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751) keeps the smallest set of most probable
tokens whose mass reaches p. As a logit threshold: with ``M(t) = sum_{x_i >= t} p_i`` (non-increasing
in t), ``tau = max { x_j : M(x_j) >= p }`` and the row keeps ``x >= tau`` (ties at tau all stay,
as with a stable sort-and-cumsum). Masses are handled in units of ``e_i = exp(x_i - m)``:
``M(t) >= p  <=>  sum_{x_i >= t} e_i >= p * s``, ``s = sum_i e_i``.

1. **Candidates.** The ``K`` largest logits (one ``topk``, shared with top-k) and their running mass
   ``c_j = sum_{l <= j} e_l``. If ``c_K >= p s``, tau is the first candidate with ``c_j >= p s``:
   exact, and the usual case for language models (the nucleus is rarely more than a few hundred
   tokens).
2. **Exact fallback** for the other rows (flat distributions), never a sort:

   - on CPU, outside ``torch.compile``: a search on the logit value (secant and bisection steps
     alternating) over the rows that need it,
     between ``lo = z + ln((1 - p) / V)`` (tokens below it carry less than 1 - p in total, so
     ``M(lo) > p``) and ``hi`` just above the K-th candidate (``M(hi) < p``), until at most
     ``FINISH`` tokens lie in ``[lo, hi)``; then one ``topk`` of those tokens and their running mass
     on top of ``M(hi)`` give tau exactly. Which rows need it and when to stop are read from CPU
     tensors (no device to wait for);
   - elsewhere (CUDA, ``torch.compile``): bisection over the order-preserving integer image of the
     floats (``KEY_BITS`` steps, a fixed count: no host sync, no data-dependent shape), which ends
     on the exact tau; computed for all rows, used for those that need it.
"""
from __future__ import annotations

import torch

from sample_smart.processors.paths import use_cpu_fast_path

__all__ = ["CANDIDATES", "FINISH", "top_p_tau"]

CANDIDATES = 128  # K: size of the candidate set taken with one topk
FINISH = 2048  # CPU fallback: search until at most this many tokens are left between lo and hi
SAMPLE_STRIDE = 32  # CPU fallback: the first probes come from every 32nd logit of the row
SAMPLE_MARGIN = 12  # ... placed this many sample ranks on either side of the estimated crossing
_MAX_STEPS = 64

_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _to_key(t: torch.Tensor) -> torch.Tensor:
    """Order-preserving map float -> signed int (as int64): a < b  <=>  key(a) < key(b) (no NaN)."""
    bits = t.view(_INT[t.dtype])
    mask = torch.iinfo(bits.dtype).max
    return torch.where(bits < 0, bits ^ mask, bits).to(torch.int64)


def _from_key(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    ity = _INT[dtype]
    bits = k.to(ity)
    mask = torch.iinfo(ity).max
    return torch.where(bits < 0, bits ^ mask, bits).view(dtype)


def _mass_at_least(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor,
                   buf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of e over x >= t, count of x >= t) per row, t: [B].

    The comparison is written as 0.0/1.0 floats (into ``buf`` when given), multiplied into e and
    summed with torch's cascade summation (a BLAS dot was measurably less exact for 1 - p ~ 1e-3
    over 150k tokens). On CPU this is several times faster than a ``where``/``masked_fill`` select,
    which is not vectorised."""
    keep = torch.ge(x, t.unsqueeze(-1), out=buf) if buf is not None else torch.ge(x, t.unsqueeze(-1)).to(e.dtype)
    count = keep.sum(dim=-1)
    return keep.mul_(e).sum(dim=-1), count


def _bisect_keys(x: torch.Tensor, e: torch.Tensor, target: torch.Tensor, hi_value: torch.Tensor) -> torch.Tensor:
    """Exact tau by a fixed number of bisection steps on float keys (no sync, fixed shapes)."""
    lo = _to_key(torch.full_like(hi_value, float("-inf")))  # M(-inf) = s >= p s
    hi = _to_key(hi_value) + 1  # just above the K-th candidate: M(hi) < p s
    steps = 32 if x.dtype == torch.float32 else 64
    for _ in range(steps):
        mid = lo + torch.div(hi - lo, 2, rounding_mode="floor")
        mass, _ = _mass_at_least(x, e, _from_key(mid, x.dtype))
        ok = mass >= target
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return _from_key(lo, x.dtype)


def _bisect_values(x: torch.Tensor, m: torch.Tensor, e: torch.Tensor, target: torch.Tensor, lo: torch.Tensor,
                   hi: torch.Tensor, mass_hi: torch.Tensor, count_hi: torch.Tensor) -> torch.Tensor:
    """CPU fallback: shrink [lo, hi) (``M(lo) >= p s > M(hi)``) to at most ``FINISH`` tokens, then
    finish exactly with one topk of those tokens.

    The first two probes come from a strided sample of the row (every ``SAMPLE_STRIDE``-th logit,
    sorted; its running mass times the stride estimates M), placed ``SAMPLE_MARGIN`` sample ranks
    on either side of the estimated crossing; they usually bracket tau within a few hundred tokens.
    Then secant steps on ``M(t) - p s`` alternate with bisection steps (guaranteed halving). Every
    probe's mass is exact, so the bracket stays valid whatever the estimates."""
    vocab = x.shape[-1]
    count_lo = torch.full_like(count_hi, vocab, dtype=e.dtype)
    count_hi = count_hi.to(e.dtype)
    mass_lo = e.sum(dim=-1)  # upper bound of M(lo), exact when lo is below every token
    buf = torch.empty_like(x)
    probes: list[torch.Tensor] = []
    if vocab >= 64 * SAMPLE_STRIDE:
        sample = torch.sort(x[:, ::SAMPLE_STRIDE], dim=-1, descending=True).values
        n = sample.shape[-1]
        est = (sample - m.unsqueeze(-1)).exp_().cumsum_(dim=-1).mul_(vocab / n)
        j = (est < target.unsqueeze(-1)).sum(dim=-1, keepdim=True)
        for off in (-SAMPLE_MARGIN, SAMPLE_MARGIN):
            probes.append(sample.gather(1, (j + off).clamp_(0, n - 1)).squeeze(-1))
    for step in range(_MAX_STEPS):
        if int((count_lo - count_hi).max()) <= FINISH:
            break
        if probes:
            t = probes.pop(0)
        elif step % 2 == 0:
            frac = (mass_lo - target) / (mass_lo - mass_hi).clamp(min=1e-30)
            t = hi - (hi - lo) * frac.clamp(0.02, 0.98)
        else:
            t = 0.5 * (lo + hi)
        inside = (t > lo) & (t < hi)
        if not bool(inside.any()):
            if probes:
                continue
            break  # float resolution reached (ties)
        t = torch.where(inside, t, 0.5 * (lo + hi))
        mass, count = _mass_at_least(x, e, t, buf)
        ok = mass >= target
        lo = torch.where(ok, t, lo)
        mass_lo = torch.where(ok, mass, mass_lo)
        count_lo = torch.where(ok, count, count_lo)
        hi = torch.where(ok, hi, t)
        mass_hi = torch.where(ok, mass_hi, mass)
        count_hi = torch.where(ok, count_hi, count)
    k = max(1, min(vocab, int((count_lo - count_hi).max())))
    cand = torch.topk(_band(x, lo, hi, buf), k, dim=-1, sorted=True).values
    cum = (cand - m.unsqueeze(-1)).exp_().cumsum_(dim=-1).add_(mass_hi.unsqueeze(-1))
    j = (cum < target.unsqueeze(-1)).sum(dim=-1)
    tau = cand.gather(1, j.clamp(max=k - 1).unsqueeze(-1)).squeeze(-1)
    return torch.where(j < k, tau, lo)


def _band(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x`` where ``lo <= x < hi``, else -inf, row by row with vectorised selects (CPU):
    ``threshold(v, t, value)`` keeps ``v > t``; negation is exact."""
    below_lo = torch.nextafter(lo, torch.full_like(lo, float("-inf"))).tolist()
    neg_hi = (-hi).tolist()
    for i, (a, b) in enumerate(zip(below_lo, neg_hi)):
        row = out[i]
        torch.ops.aten.threshold.out(x[i], a, float("-inf"), out=row)  # x >= lo, else -inf
        row.neg_()
        torch.ops.aten.threshold.out(row, b, float("inf"), out=row)  # -x > -hi, i.e. x < hi
        row.neg_()
    return out


def top_p_tau(x: torch.Tensor, m: torch.Tensor, e: torch.Tensor, s: torch.Tensor, top_p: torch.Tensor,
              values: torch.Tensor | None = None) -> torch.Tensor:
    """tau per row (see module doc); ``-inf`` where ``top_p >= 1`` (off).

    ``x`` [B, V] tempered logits, ``m`` row max, ``e = exp(x - m)``, ``s = sum e``; ``values``: the
    largest logits per row, sorted descending (at least ``min(CANDIDATES, V)`` columns), if known.
    """
    vocab = x.shape[-1]
    kc = min(vocab, CANDIDATES)
    if values is None or values.shape[-1] < kc:
        values = torch.topk(x, kc, dim=-1, sorted=True).values
    on = top_p < 1.0
    target = torch.where(on, top_p, torch.zeros_like(top_p)) * s  # off rows: found at j = 0
    cum = (values - m.unsqueeze(-1)).exp_().cumsum_(dim=-1)
    kv = values.shape[-1]
    j = (cum < target.unsqueeze(-1)).sum(dim=-1)
    tau = values.gather(1, j.clamp(max=kv - 1).unsqueeze(-1)).squeeze(-1)
    if kv < vocab:
        v_last = values[:, -1]
        need = (j >= kv) & torch.isfinite(v_last)  # candidates hold less than p (flat rows)
        if use_cpu_fast_path(x):
            rows = need.nonzero().flatten()
            if rows.numel():
                p, vl = top_p[rows], v_last[rows]
                hi = torch.nextafter(vl, torch.full_like(vl, float("inf")))
                above = values[rows] > vl.unsqueeze(-1)  # candidates strictly above the K-th
                mass_hi = torch.where(above, cum[rows], 0.0).amax(dim=-1)
                z = m[rows] + s[rows].log()
                lo = torch.minimum(z + torch.log((1.0 - p) / vocab), vl)
                tau[rows] = _bisect_values(x[rows], m[rows], e[rows], target[rows], lo, hi, mass_hi,
                                           above.sum(dim=-1))
        else:
            tau = torch.where(need, _bisect_keys(x, e, target, v_last), tau)
    return torch.where(on, tau, torch.full_like(tau, float("-inf")))
