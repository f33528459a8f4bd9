"""The one place that chooses how the chain runs, once per call.

Three backends, set by ``SAMPLE_SMART_BACKEND`` (read on first use, so a bad value raises
ValueError at the first processor call, not at import) or :func:`set_backend`:

- ``auto`` (default): the fixed compiled programs of :mod:`~sample_smart.processors.plans` for
  every logits signature (vocabulary, dtype, device, in place) that :func:`prepare` compiled, the
  eager chain for everything else. It never compiles while it runs: an engine calls
  :func:`prepare` at start-up (the vLLM processor does), and a signature nobody prepared, or a
  machine without a compiler, runs eager;
- ``eager``: the chain (:mod:`~sample_smart.processors.chain`) as whole-batch tensor ops, always;
- ``compiled``: the chain through ``torch.compile`` per set of active rules, compiled on first use
  (:mod:`~sample_smart.processors.compiled`; offline use, where a compile per new combination is
  acceptable).

Every path is whole-batch tensor ops with no ``.item()``/``.tolist()``: the same program on CUDA,
under ``torch.compile(fullgraph=True)`` and on CPU. One exception, on CPU only: top-p reads one CPU
flag ("does any row need the search?") to skip work no row needs; a CPU tensor has no device to
wait for, and on CUDA the work runs for every row instead (see :mod:`~sample_smart.processors.top_p`).
Under an outer ``torch.compile`` the eager program is traced into the caller's graph (no nested compile).

The CPU fast path, ``SAMPLE_SMART_CPU_FAST_PATH=1`` / :func:`set_cpu_fast_path` (eager chain, CPU
tensors only), runs the eager chain in row blocks: :mod:`~sample_smart.processors.cpu_blocks`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from sample_smart.processors import chain, compiled, cpu_blocks, plans
from sample_smart.processors.state import BatchState

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CPU_FAST_PATH_ENV",
    "get_backend",
    "get_cpu_fast_path",
    "prepare",
    "process_core",
    "set_backend",
    "set_cpu_fast_path",
    "warmup",
]

BACKEND_ENV = "SAMPLE_SMART_BACKEND"
CPU_FAST_PATH_ENV = "SAMPLE_SMART_CPU_FAST_PATH"
BACKENDS = ("auto", "eager", "compiled")
_backend: str | None = None  # None: not read yet (read from the environment on first use)
_cpu_fast_path: bool | None = None


def _check(name: object, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"{source} is invalid: allowed {', '.join(repr(b) for b in BACKENDS)}")
    return name.strip().lower()


def get_backend() -> str:
    """The processor backend: ``'auto'``, ``'eager'`` or ``'compiled'`` (``SAMPLE_SMART_BACKEND``,
    default auto, unless :func:`set_backend` chose one)."""
    global _backend
    if _backend is None:
        value = os.environ.get(BACKEND_ENV, "auto") or "auto"
        _backend = _check(value, f"{BACKEND_ENV}={value!r}")
    return _backend


def set_backend(name: str | None) -> None:
    """Choose the backend for this process: ``'auto'``, ``'eager'`` or ``'compiled'``; ``None`` re-reads
    ``SAMPLE_SMART_BACKEND`` on next use. ValueError on any other value."""
    global _backend
    _backend = None if name is None else _check(name, f"set_backend({name!r}) ({BACKEND_ENV} backend)")


def get_cpu_fast_path() -> bool:
    """Whether the opt-in CPU fast path is on (``SAMPLE_SMART_CPU_FAST_PATH`` "1"/"0", default off)."""
    global _cpu_fast_path
    if _cpu_fast_path is None:
        value = os.environ.get(CPU_FAST_PATH_ENV, "0") or "0"
        if value not in ("0", "1"):
            raise ValueError(f"{CPU_FAST_PATH_ENV}={value!r} is invalid: allowed '0' or '1'")
        _cpu_fast_path = value == "1"
    return _cpu_fast_path


def set_cpu_fast_path(on: bool | None) -> None:
    """Switch the CPU fast path for this process; ``None`` re-reads the environment on next use."""
    global _cpu_fast_path
    if on is not None and not isinstance(on, bool):
        raise ValueError(f"set_cpu_fast_path({on!r}) is invalid: allowed True, False or None")
    _cpu_fast_path = on


def process_core(logits: torch.Tensor, state: BatchState, inplace: bool = False) -> torch.Tensor:
    """Apply the batch's decoders to ``logits`` [B, V]; no validation, no host sync.

    Returns the tempered logits with -inf outside each row's kept set, in the input dtype
    (statistics are computed in float32 for half-precision input). Returns ``logits`` itself
    when no row uses any knob; otherwise a new tensor, or ``logits`` modified in place when
    ``inplace`` (float32/float64 input only). The backend is chosen here, once per call.
    """
    if state.is_noop:
        return logits
    work_inplace = inplace and logits.dtype in chain.WORK_DTYPES
    if torch.compiler.is_compiling():  # inside a caller's compile: trace the eager program
        return chain.run(logits, state, work_inplace)
    backend = get_backend()
    if backend == "auto":
        out = plans.run(logits, state, work_inplace)
        if out is not None:
            return out
    elif backend == "compiled":
        return compiled.run(logits, state, work_inplace)
    if logits.device.type == "cpu" and get_cpu_fast_path():
        return cpu_blocks.run(logits, state, work_inplace)
    return chain.run(logits, state, work_inplace)


def prepare(
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    inplace: bool = True,
    inference: bool = False,
) -> float | None:
    """Compile the fixed programs for ``[*, vocab_size]`` logits (the ``auto`` backend's start-up
    cost, paid here and never again in this signature). Returns the seconds it took, or None when
    nothing was compiled: the backend is not ``auto``, or the compiler is missing or fails (then
    one warning says so and the eager chain runs). ``inplace``: how the caller will write (the vLLM
    processor: True; :func:`process`: False); ``inference``: whether it calls inside
    ``torch.inference_mode`` with inference tensors (an engine) or not (scripts, :func:`process`)."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r} is invalid: allowed integers >= 1")
    if get_backend() != "auto":
        return None
    missing = plans.missing_compiler(torch.device(device))
    if missing:
        plans.warn_fallback(missing)
        return None
    try:
        return plans.prepare(vocab_size, dtype, device, inplace, inference)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager, say so once
        plans.warn_fallback(f"compiling failed ({type(exc).__name__}: {exc})")
        return None


def warmup(
    state: BatchState,
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    inplace: bool = False,
) -> bool:
    """Compile ahead of serving: run the compiled backend once on random logits of shape
    ``[state.batch_size, vocab_size]`` (and on one row, which dynamo compiles separately, when the
    state has several). Pass the ``inplace`` the engine will use (the vLLM processor: True).

    Returns False without doing anything when the backend is not ``compiled`` or the state uses no
    knob (nothing to compile)."""
    if get_backend() != "compiled" or state.is_noop:
        return False
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size!r} is invalid: allowed integers >= 1")
    device = state.device if device is None else torch.device(device)
    shapes: list[Any] = [state]
    if state.batch_size > 1:
        shapes.append(state.rows(0, 1))
    g = torch.Generator().manual_seed(0)
    for s in shapes:
        x = (torch.randn(s.batch_size, vocab_size, generator=g) * 2.0).to(device=device, dtype=dtype)
        process_core(x, s, inplace=inplace)
    return True
