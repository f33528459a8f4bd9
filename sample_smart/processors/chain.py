"""The decoder chain, top to bottom, on a batch (or a block) of rows.

1. temperature or EDT scales each row (rows without either are untouched);
2. the shared statistics of the tempered rows (max m, logsumexp z, entropy H, p_max, the largest
   logits, ...) are computed once, and only those some active rule needs (``rules.Rule.needs``);
3. every active rule of :data:`~sample_smart.processors.rules.RULES` gives a threshold tau on the
   tempered logits; the kept sets are intersected by a row-wise max of the taus; ``tau <= m`` so the
   argmax is never removed and every row keeps at least one token;
4. one write: ``x[x < tau] = -inf``.

Which rules run is decided by the host values of :class:`BatchState` only, so :func:`run` has no
host sync and compiles with ``torch.compile(fullgraph=True)``. This module knows nothing of
backends: :mod:`~sample_smart.processors.dispatch` picks how the chain runs.
"""

from __future__ import annotations

import torch

from sample_smart.processors.rules import Stats
from sample_smart.processors.select import chunk_maxima, largest_values, uses_chunks
from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import finite_std, row_stats
from sample_smart.processors.temperature import apply_temperature

__all__ = ["WORK_DTYPES", "in_work_dtype", "row_stats_for", "row_thresholds", "run", "tempered_thresholds"]

WORK_DTYPES = (torch.float32, torch.float64)


def in_work_dtype(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` itself when float32/float64, else a float32 copy (statistics of half precision
    logits are computed in float32)."""
    return logits if logits.dtype in WORK_DTYPES else logits.float()


def row_stats_for(
    x: torch.Tensor, state: BatchState, m: torch.Tensor | None = None, cmax: torch.Tensor | None = None
) -> Stats:
    """The statistics the batch's active rules need (``state.needs``), each computed once."""
    needs = state.needs
    if m is None and cmax is not None:
        m = cmax.amax(dim=-1)
    base = row_stats(
        x, need_z=bool(needs & {"z", "p_max", "mass"}), need_entropy="entropy" in needs, m=m, keep_exp="mass" in needs
    )
    p_max = (base.m - base.z).exp() if base.z is not None else None
    values = largest_values(x, state.candidates, cmax) if "values" in needs else None
    sigma = finite_std(x, base.m) if "sigma" in needs else None
    return Stats(x, base.m, base.z, p_max, base.entropy, base.e, base.s, values, sigma)


def row_thresholds(
    x: torch.Tensor, state: BatchState, m: torch.Tensor | None = None, cmax: torch.Tensor | None = None
) -> torch.Tensor:
    """The combined per-row threshold tau ([B]) on tempered logits ``x``: keep ``x >= tau``.

    ``m``: the row max of ``x``, ``cmax``: its chunk maxima (see ``select``), when known. Every
    active rule of the table gives a tau; the kept sets are intersected by a row-wise max, and
    ``tau <= m`` keeps the argmax."""
    stats = row_stats_for(x, state, m, cmax)
    tau = None
    for rule in state.active_rules:
        t = rule.tau(stats, state.params)
        tau = t if tau is None else torch.maximum(tau, t)
    if tau is None:
        return torch.full_like(stats.m, float("-inf"))
    return torch.minimum(tau, stats.m)  # the argmax always survives


def tempered_thresholds(
    logits: torch.Tensor, state: BatchState, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Steps 1-3: ``(x, tau, owned)``: the tempered logits in a work dtype (``logits`` itself when
    nothing needed changing), each row's threshold ``[B, 1]``, and whether ``x`` may be written."""
    x = in_work_dtype(logits)
    owned = x is not logits or inplace  # may we write into x?
    m = cmax = None
    k = state.candidates
    if k and uses_chunks(x.shape[-1], k):  # chunk maxima: top-k candidates, and the row max for free
        cmax = chunk_maxima(x)
        m = cmax.amax(dim=-1)
    if state.any_temperature or state.any_edt:
        tempered = apply_temperature(x, state, inplace=owned, m=m)
        x, m, owned = tempered.x, tempered.m, True
        cmax = None if cmax is None else tempered.map(cmax)
    return x, row_thresholds(x, state, m=m, cmax=cmax).unsqueeze(-1), owned


def needs_half_output(dtype: torch.dtype, state: BatchState) -> bool:
    """Half-precision logits with tempered rows take :func:`tempered_half_output`'s write."""
    return dtype not in WORK_DTYPES and (state.any_temperature or state.any_edt)


def run(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    """The whole chain on ``logits`` [B, V] as whole-tensor ops; ``inplace``: write into ``logits``
    (float32/float64 only; the caller decides)."""
    dtype = logits.dtype
    x, tau, owned = tempered_thresholds(logits, state, inplace)
    if needs_half_output(dtype, state):
        return tempered_half_output(x, tau, state, dtype)
    drop = x < tau
    res = x.masked_fill_(drop, float("-inf")) if owned else x.masked_fill(drop, float("-inf"))
    return res if res.dtype == dtype else res.to(dtype)


def tempered_half_output(x: torch.Tensor, tau: torch.Tensor, state: BatchState, dtype: torch.dtype) -> torch.Tensor:
    """The write for float16/bfloat16 logits when some row is tempered (``x``: our float32 copy).

    ``logits / T`` leaves the half range for small T (fp16 overflows at 65504: ``30 / 1e-4``), so
    tempered rows are returned as ``(x - max) / T`` (EDT rows are shifted already; the same
    distribution, the max at 0) and kept values below the dtype's lowest finite value are floored
    there (their probability is 0 in that dtype either way). Removed tokens, and -inf inputs, stay -inf.
    """
    drop = x < tau.clamp(min=torch.finfo(x.dtype).min)  # -inf inputs are dropped even where tau = -inf
    shift = torch.where(state.temperature != 1.0, x.amax(dim=-1), 0.0)
    x = x.sub_(shift.unsqueeze(-1)).clamp_(min=torch.finfo(dtype).min).masked_fill_(drop, float("-inf"))
    return x.to(dtype)
