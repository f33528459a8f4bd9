"""Temperature and entropy-dependent temperature (EDT).

- temperature: ``x = logits / T`` (T = 1 leaves a row untouched bit for bit);
- EDT (Zhang et al. 2024, "EDT: Improving LLMs' generation by entropy-based dynamic temperature
  sampling", arXiv 2403.14541): ``T = T0 * N ** (theta / H)``, H the entropy in nats of the
  *untempered* row. We evaluate ``ln T = ln T0 + theta * ln N / H`` with H clamped below at
  1e-12 and ``theta * ln N / H`` clamped to [-EDT_MAX_LOG, EDT_MAX_LOG], so every N > 0 gives a
  finite, positive T (the reference clamps the exponent at >= 1e-5, which makes N < 1 a no-op
  and lets N > 1 overflow). EDT rows are returned as ``(logits - m) / T`` (m the row max): the
  same distribution as ``logits / T`` but with the max at 0, so a tiny T cannot overflow to
  +inf and a huge one cannot turn ``-inf`` padding into NaN.
"""
from __future__ import annotations

import torch

from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import row_stats

__all__ = ["EDT_MAX_LOG", "apply_temperature"]

EDT_MAX_LOG = 30.0  # |ln(T / T0)| <= 30, i.e. T within T0 * [1e-13, 1e13]


def edt_temperature(entropy: torch.Tensor, state: BatchState) -> torch.Tensor:
    """Per-row EDT temperature T = T0 * N^(theta / H) (finite and > 0 for every N > 0)."""
    h = entropy.clamp(min=1e-12)
    exponent = (state.edt_theta * state.edt_log_n / h).clamp(-EDT_MAX_LOG, EDT_MAX_LOG)
    return (state.edt_log_t0 + exponent).exp()


def apply_temperature(x: torch.Tensor, state: BatchState, inplace: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale the rows of ``x`` by their temperature. Returns (tempered, row max of tempered or None).

    When EDT runs, the row max is known without another read: ``(m - m) / T = 0`` for EDT rows
    and ``m / T`` for the others.
    """
    temperature = state.temperature
    if not state.any_edt:
        scale = temperature.unsqueeze(-1)
        return (x.div_(scale) if inplace else x / scale), None
    stats = row_stats(x, need_z=False, need_entropy=True)
    t_edt = edt_temperature(stats.entropy, state)
    temperature = torch.where(state.edt, t_edt, temperature)
    shift = torch.where(state.edt, stats.m, torch.zeros_like(stats.m))
    if inplace:
        x = x.sub_(shift.unsqueeze(-1)).div_(temperature.unsqueeze(-1))
    else:
        x = (x - shift.unsqueeze(-1)).div_(temperature.unsqueeze(-1))
    return x, (stats.m - shift) / temperature
