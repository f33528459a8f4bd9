"""The public entry points: :func:`process` (validated) and :func:`process_core` (for engines).

:func:`process` checks the logits, builds the :class:`BatchState` of the configs and calls
:func:`~sample_smart.processors.dispatch.process_core`, which runs the chain
(:mod:`~sample_smart.processors.chain`) with the backend chosen in
:mod:`~sample_smart.processors.dispatch`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from sample_smart.config import DecodeConfig
from sample_smart.processors.chain import row_thresholds
from sample_smart.processors.dispatch import process_core
from sample_smart.processors.state import BatchState

__all__ = ["process", "process_core", "row_thresholds", "validate_logits"]


def validate_logits(logits: torch.Tensor) -> None:
    """Raise ValueError unless ``logits`` is a float [B, V] tensor whose every row has a finite max
    and no NaN (rows may contain -inf, e.g. masked vocabulary padding). Reads the device."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [batch, vocab] with vocab >= 1, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor (fp32, fp16, bf16), got {logits.dtype}")
    # amax propagates NaN, so one read finds NaN rows, all -inf rows and +inf rows alike
    row_max = logits.amax(dim=-1)
    bad = ~torch.isfinite(row_max)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"logits rows {rows[:10]}{'...' if len(rows) > 10 else ''} contain NaN or have no finite "
            "value (allowed: finite logits, with -inf for masked tokens)"
        )


@functools.lru_cache(maxsize=16)
def _state_for(configs: tuple[DecodeConfig, ...], device: torch.device, vocab_size: int) -> BatchState:
    """The BatchState of a config list, kept for the next call with the same list (a script that
    calls :func:`process` in a loop rebuilds nothing; a state holds only small [B] tensors)."""
    return BatchState.from_configs(configs, device=device, vocab_size=vocab_size)


def process(
    logits: torch.Tensor, configs: DecodeConfig | Sequence[DecodeConfig] | BatchState, inplace: bool = False
) -> torch.Tensor:
    """Validate ``logits`` and apply the decoders.

    ``configs``: one :class:`DecodeConfig` for all rows, a sequence of B of them (rows may differ
    in every knob), or a prepared :class:`BatchState`. See :func:`process_core` for the result.
    """
    validate_logits(logits)
    batch = logits.shape[0]
    if isinstance(configs, BatchState):
        state = configs
    else:
        if isinstance(configs, DecodeConfig):
            configs = [configs] * batch
        elif isinstance(configs, dict):
            raise TypeError("configs must be DecodeConfig objects: use DecodeConfig.from_dict(d)")
        configs = tuple(configs)
        for i, c in enumerate(configs):
            if not isinstance(c, DecodeConfig):
                raise TypeError(f"configs[{i}] is a {type(c).__name__}, expected DecodeConfig")
        state = _state_for(configs, logits.device, logits.shape[-1])
    if state.batch_size != batch:
        raise ValueError(f"got {state.batch_size} configs for a batch of {batch} rows")
    if state.device.type != logits.device.type:
        raise ValueError(f"BatchState is on {state.device} but logits are on {logits.device}")
    return process_core(logits, state, inplace=inplace)
