"""Build a vLLM engine (``vllm.LLM``) with sample_smart's processor, tuned for this machine.

``make_llm(model=None, **overrides)`` is the one way the project starts an offline engine
(tests, traces, lm-eval, benchmarks). Without a GPU it uses CPU settings that were tried on a
2-core AVX2 machine:

- environment (set before ``import vllm``, only when not already set):
  ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB of KV cache), ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
  (engine in-process: ~6 s start instead of ~40 s), ``VLLM_CPU_OMP_THREADS_BIND=<all our
  cores>`` (with tensor x pipeline parallel size r > 1: r groups of our cores, "0|1"),
  ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``;
- engine arguments: ``dtype="float32"`` (bf16 is slower on AVX2), ``enforce_eager=True``
  (``False`` with pipeline parallelism, which vLLM 0.32 runs on CPU only compiled),
  ``max_model_len=512``, and no chunked prefill (``enable_chunked_prefill=False``,
  ``max_num_batched_tokens=max(max_model_len, 8192)``): vLLM 0.32 rewinds a seeded request's
  ``torch.Generator`` after a partial prefill, which CPU generators cannot do
  (``RuntimeError: CPU Generator does not use offset`` kills the engine as soon as many seeded
  prompts arrive at once).

With a GPU only the processor registration is added; vLLM's defaults stay.

Commands pass the user's engine flags (``--tensor-parallel-size``, ``--engine-arg KEY=VALUE``, ...)
as ``overrides``, checked first by :mod:`sample_smart.integrations.engine_args`; an override
replaces the CPU default of the same key (docs/scaling.md).

Registration: when sample_smart is installed, vLLM already loads the processor through the
``vllm.logits_processors`` entry point, so it is not listed again (a second copy would be
harmless anyway: see ``SampleSmartLogitsProcessor``); from a source tree without the
entry point it is passed as ``logits_processors=[FQCN]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROCESSOR_FQCN = "sample_smart.integrations.vllm:SampleSmartLogitsProcessor"
ENTRY_POINT_GROUP = "vllm.logits_processors"

# Engine arguments that worked on a 2-core AVX2 machine without a GPU.
CPU_ENGINE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 512,
}


def _span(cores: list[int]) -> str:
    if len(cores) == 1:
        return str(cores[0])
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))


def _cpu_bind(ranks: int = 1) -> str:
    """The cores this process may run on, in VLLM_CPU_OMP_THREADS_BIND syntax ("0-1" or "0,2,5");
    with several ranks, split into ``ranks`` contiguous groups separated by "|" ("0|1")."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = list(range(os.cpu_count() or 1))
    if ranks <= 1:
        return _span(cores)
    if len(cores) < ranks:
        raise ValueError(
            f"{ranks} ranks (tensor x pipeline parallel size) need at least {ranks} CPU cores; "
            f"this process may use {len(cores)} ({_span(cores)})"
        )
    per, extra = divmod(len(cores), ranks)
    groups, start = [], 0
    for r in range(ranks):
        size = per + (r < extra)
        groups.append(_span(cores[start : start + size]))
        start += size
    return "|".join(groups)


def cpu_ranks(overrides: dict[str, Any]) -> int:
    """Worker processes per engine: tensor x pipeline parallel size of the overrides."""
    return int(overrides.get("tensor_parallel_size") or 1) * int(overrides.get("pipeline_parallel_size") or 1)


def cpu_environment(ranks: int = 1) -> dict[str, str]:
    """The vLLM CPU environment variables make_llm sets (when unset) without a GPU (``ranks``:
    worker processes of the engine, each bound to its own cores)."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_OMP_THREADS_BIND": _cpu_bind(ranks),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


def has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def apply_cpu_environment(environ: dict[str, str] | None = None, ranks: int = 1) -> dict[str, str]:
    """Set the CPU variables in ``environ`` (default ``os.environ``) unless set; return them."""
    env = os.environ if environ is None else environ
    values = cpu_environment(ranks)
    for key, value in values.items():
        env.setdefault(key, value)
    return {k: env[k] for k in values}


def processor_entry_point_installed() -> bool:
    """True when vLLM will load our processor by itself (the package's entry point)."""
    from importlib.metadata import entry_points

    return any(ep.value == PROCESSOR_FQCN for ep in entry_points(group=ENTRY_POINT_GROUP))


def engine_kwargs(model: str | os.PathLike | None = None, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments make_llm passes to ``vllm.LLM`` (no vLLM import, no side effects
    besides preparing the default model when ``model`` is None)."""
    if model is None:
        from sample_smart.models import prepare_default_model

        model = prepare_default_model()
    kwargs: dict[str, Any] = {"model": str(Path(model)) if isinstance(model, os.PathLike) else model}
    if not has_gpu():
        kwargs.update(CPU_ENGINE_DEFAULTS)
        if "enable_chunked_prefill" not in overrides:
            max_len = int(overrides.get("max_model_len") or CPU_ENGINE_DEFAULTS["max_model_len"])
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(max_len, 8192))
        if int(overrides.get("pipeline_parallel_size") or 1) > 1:
            # vLLM 0.32's CPU runner allocates a later stage's intermediate tensors only in its
            # compile warm-up, which eager mode skips: stage 2 would fail at its first step
            kwargs["enforce_eager"] = False
    kwargs.update(overrides)
    procs = list(kwargs.get("logits_processors") or [])
    listed = any(p == PROCESSOR_FQCN or getattr(p, "__name__", None) == "SampleSmartLogitsProcessor" for p in procs)
    if not listed and not processor_entry_point_installed():
        procs.append(PROCESSOR_FQCN)
    if procs:
        kwargs["logits_processors"] = procs
    return kwargs


def make_llm(model: str | os.PathLike | None = None, **overrides: Any):
    """A ``vllm.LLM`` on ``model`` (default: the embedded SmolLM2-135M-Instruct) with
    sample_smart's processor registered; ``overrides`` go to ``vllm.LLM`` as they are
    (e.g. ``logprobs_mode="processed_logprobs"``, ``seed=1``, ``max_model_len=1024``)."""
    if not has_gpu():
        apply_cpu_environment(ranks=cpu_ranks(overrides))
    kwargs = engine_kwargs(model, **overrides)
    import vllm

    return vllm.LLM(**kwargs)
