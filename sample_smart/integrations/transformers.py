"""transformers adapter: sample_smart's decoders inside ``model.generate``.

    from sample_smart import DecodeConfig
    from sample_smart.integrations.transformers import generate_kwargs

    cfg = DecodeConfig.from_dict({"min_p": 0.1, "greedy_threshold": 0.3})
    out = model.generate(**inputs, max_new_tokens=64, **generate_kwargs(cfg))

transformers runs custom logits processors *before* its own sampling warpers (temperature,
top-k = 50 by default, top-p, ...). ``generate_kwargs`` therefore turns those warpers off
(``temperature=1.0, top_k=0, top_p=1.0, min_p=None``) and sets ``do_sample=True``, so the
distribution sampled from is exactly the one our chain returns. One config may be given per
prompt; with ``num_return_sequences = n`` each prompt's config is repeated n times, matching
the order in which transformers expands the batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sample_smart.config import DecodeConfig
from sample_smart.processors import BatchState, process_core

try:  # the adapter subclasses transformers' LogitsProcessor when it is available
    from transformers import LogitsProcessor as _HFLogitsProcessor
    from transformers import LogitsProcessorList
except ImportError as exc:  # pragma: no cover - import guard
    raise ImportError("sample_smart.integrations.transformers needs `pip install sample_smart[transformers]`") from exc


def __getattr__(name: str):  # lazy re-export: the Trainer machinery loads only when asked for
    if name == "DecisionTokenCallback":
        from sample_smart.integrations.decision_callback import DecisionTokenCallback

        return DecisionTokenCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DecisionTokenCallback", "SampleSmartHFLogitsProcessor", "generate_kwargs"]  # noqa: F822 (lazy, via __getattr__)


class SampleSmartHFLogitsProcessor(_HFLogitsProcessor):
    """A transformers ``LogitsProcessor`` applying per-row :class:`DecodeConfig` s.

    ``configs``: one config for every row, or one per prompt (repeated ``num_return_sequences``
    times). The per-row tensors are built once, on the first call, on the scores' device.
    """

    def __init__(self, configs: DecodeConfig | Sequence[DecodeConfig], num_return_sequences: int = 1):
        if isinstance(configs, DecodeConfig):
            self._configs: list[DecodeConfig] | None = None
            self._single = configs
        else:
            self._configs = [c for c in configs for _ in range(num_return_sequences)]
            self._single = None
        self._state: BatchState | None = None

    def _state_for(self, scores: torch.Tensor) -> BatchState:
        batch, vocab = scores.shape
        state = self._state
        if state is None or state.batch_size != batch or state.device.type != scores.device.type:
            if self._configs is None:
                configs = [self._single] * batch
            elif len(self._configs) != batch:
                raise ValueError(f"{len(self._configs)} configs (after num_return_sequences) for a batch of {batch}")
            else:
                configs = self._configs
            state = BatchState.from_configs(configs, device=scores.device, vocab_size=vocab)
            self._state = state
        return state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return process_core(scores, self._state_for(scores))


def generate_kwargs(
    configs: DecodeConfig | Sequence[DecodeConfig], num_return_sequences: int = 1, **extra: Any
) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` that sample from exactly our processed distribution."""
    proc = SampleSmartHFLogitsProcessor(configs, num_return_sequences=num_return_sequences)
    kwargs: dict[str, Any] = {
        "logits_processor": LogitsProcessorList([proc]),
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": None,
        "num_return_sequences": num_return_sequences,
    }
    kwargs.update(extra)
    return kwargs
