"""Batched, per-row logits processors in pure torch (see ``pipeline`` for the chain)."""
from sample_smart.processors.pipeline import process, process_core, row_thresholds, validate_logits
from sample_smart.processors.state import BatchState

__all__ = ["BatchState", "process", "process_core", "row_thresholds", "validate_logits"]
