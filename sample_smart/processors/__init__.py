"""Batched, per-row logits processors in pure torch (see ``pipeline`` for the chain)."""
from sample_smart.processors.compiled import warmup
from sample_smart.processors.paths import get_backend, set_backend
from sample_smart.processors.pipeline import process, process_core, row_thresholds, validate_logits
from sample_smart.processors.state import BatchState

__all__ = ["BatchState", "get_backend", "process", "process_core", "row_thresholds", "set_backend",
           "validate_logits", "warmup"]
