"""Batched, per-row logits processors in pure torch.

- :mod:`~sample_smart.processors.rules`: every truncation rule, declared once (the table);
- :mod:`~sample_smart.processors.state`: :class:`BatchState`, the rows' parameters as tensors;
- :mod:`~sample_smart.processors.chain`: the chain (temperature, statistics, thresholds, one write);
- :mod:`~sample_smart.processors.plans`: the few fixed compiled programs that cover every knob set;
- :mod:`~sample_smart.processors.dispatch`: how it runs (auto, eager, compiled, CPU row blocks);
- :mod:`~sample_smart.processors.pipeline`: :func:`process` (validated) and :func:`process_core`.
"""

from sample_smart.processors.dispatch import (
    get_backend,
    get_cpu_fast_path,
    prepare,
    set_backend,
    set_cpu_fast_path,
    warmup,
)
from sample_smart.processors.pipeline import process, process_core, row_thresholds, validate_logits
from sample_smart.processors.state import BatchState

__all__ = [
    "BatchState",
    "get_backend",
    "get_cpu_fast_path",
    "prepare",
    "process",
    "process_core",
    "row_thresholds",
    "set_backend",
    "set_cpu_fast_path",
    "validate_logits",
    "warmup",
]
