"""Per-token rank/probability traces, streamed as JSONL (crash-safe, resumable).

* ``schemas``: versioned record types and validators (teacher-forced, generation);
* ``writer.TraceWriter`` / ``reader.read_records``: streaming, line-numbered errors;
* ``teacher_forcing`` with ``transformers_backend`` and ``vllm_backend``;
* ``generation``: traces of vLLM generations, stop-of-tracing by text;
* ``reference``: the reference formats (low_conf_ranks, all_sampled_ranks, gt/top_ids).

Nothing here imports vllm or transformers at import time.
"""

from .reader import (
    TraceFormatError,
    TraceFormatWarning,
    completed_ids,
    iter_generation,
    iter_teacher_forced,
    read_jsonl,
    read_records,
)
from .schemas import GENERATION, TEACHER_FORCED, SchemaError, validate_generation, validate_teacher_forced
from .writer import TraceWriter

__all__ = [
    "GENERATION",
    "TEACHER_FORCED",
    "SchemaError",
    "TraceFormatError",
    "TraceFormatWarning",
    "TraceWriter",
    "completed_ids",
    "iter_generation",
    "iter_teacher_forced",
    "read_jsonl",
    "read_records",
    "validate_generation",
    "validate_teacher_forced",
]
