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

from typing import NamedTuple

import torch

from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import row_stats

__all__ = ["EDT_MAX_LOG", "Tempered", "apply_temperature"]

EDT_MAX_LOG = 30.0  # |ln(T / T0)| <= 30, i.e. T within T0 * [1e-13, 1e13]


class Tempered(NamedTuple):
    """Tempered logits ``x = (logits - shift) / temperature`` (``shift`` None: 0)."""

    x: torch.Tensor
    m: torch.Tensor | None  # [B] row max of x, when known without another read
    shift: torch.Tensor | None  # [B]
    temperature: torch.Tensor  # [B]

    def map(self, v: torch.Tensor) -> torch.Tensor:
        """The same map on other values of the rows (``[B, n]``), e.g. their chunk maxima:
        the same float operations as on ``x``, so maxima map to maxima exactly."""
        if self.shift is not None:
            v = v - self.shift.unsqueeze(-1)
        return v / self.temperature.unsqueeze(-1)


def edt_temperature(
    entropy: torch.Tensor, edt_theta: torch.Tensor, edt_log_n: torch.Tensor, edt_log_t0: torch.Tensor
) -> torch.Tensor:
    """Per-row EDT temperature T = T0 * N^(theta / H) (finite and > 0 for every N > 0), from the
    rows' ``edt_theta``, ``edt_log_n``, ``edt_log_t0`` (a :class:`BatchState`'s, or some rows' of it)."""
    h = entropy.clamp(min=1e-12)
    exponent = (edt_theta * edt_log_n / h).clamp(-EDT_MAX_LOG, EDT_MAX_LOG)
    return (edt_log_t0 + exponent).exp()


def apply_temperature(x: torch.Tensor, state: BatchState, inplace: bool, m: torch.Tensor | None = None) -> Tempered:
    """Scale the rows of ``x`` by their temperature. ``m``: the row max of ``x`` if known.

    The tempered row max comes without another read: ``(m - m) / T = 0`` for EDT rows and
    ``m / T`` for the others.
    """
    temperature = state.temperature
    if not state.any_edt:
        scale = temperature.unsqueeze(-1)
        x = x.div_(scale) if inplace else x / scale
        return Tempered(x, None if m is None else m / temperature, None, temperature)
    stats = row_stats(x, need_z=False, need_entropy=True, m=m)
    t_edt = edt_temperature(stats.entropy, state.edt_theta, state.edt_log_n, state.edt_log_t0)
    temperature = torch.where(state.edt, t_edt, temperature)
    shift = torch.where(state.edt, stats.m, torch.zeros_like(stats.m))
    if inplace:
        x = x.sub_(shift.unsqueeze(-1)).div_(temperature.unsqueeze(-1))
    else:
        x = (x - shift.unsqueeze(-1)).div_(temperature.unsqueeze(-1))
    return Tempered(x, (stats.m - shift) / temperature, shift, temperature)
