"""Which implementation of the chain runs: the sync-free one (default), compiled or not, or the
CPU fast path.

Default, on every device: whole-batch tensor ops only. No Python loop over rows, no
``.item()``/``.tolist()``: the code path depends only on which knobs the batch's configs set, so
it is the same program on CUDA, under ``torch.compile(fullgraph=True)`` and on CPU. One exception,
on CPU only: top-p reads one CPU flag ("does any row need the search?") to skip work no row needs
(``torch.cond`` when compiled); a CPU tensor has no device to wait for, and on CUDA the work runs
for every row instead (see :mod:`~sample_smart.processors.top_p`).

Backend (``SAMPLE_SMART_BACKEND`` in the environment, or :func:`set_backend`):

- ``eager`` (default): that program runs op by op;
- ``compiled``: the same program goes through ``torch.compile(fullgraph=True)`` (inductor: fused
  C++/OpenMP kernels on CPU, Triton on CUDA), one compiled callable per combination of the
  :class:`~sample_smart.processors.state.BatchState` host flags (see
  :mod:`~sample_smart.processors.compiled`). The first call for a combination compiles (seconds);
  :func:`~sample_smart.processors.compiled.warmup` does it before serving. Takes precedence over
  the CPU fast path. Under an outer ``torch.compile`` the eager program is traced into the
  caller's graph instead (no nested compile).

CPU fast path (opt-in, ``SAMPLE_SMART_CPU_FAST_PATH=1`` in the environment, or
``paths.CPU_FAST_PATH = True``; eager backend only): on CPU in eager mode, rows go through the
chain in cache-sized blocks, the final write is row by row with ``aten.threshold`` (vectorised on
CPU, unlike ``masked_fill``/``where``). These read small CPU tensors on the host, which on a CPU
waits for nothing, and loop over row blocks in Python; they give the same kept sets
(tests/test_processors_blocks.py).
"""
from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "BACKEND_ENV", "CPU_FAST_PATH", "get_backend", "set_backend", "use_compiled",
           "use_cpu_fast_path"]

CPU_FAST_PATH: bool = os.environ.get("SAMPLE_SMART_CPU_FAST_PATH", "0") == "1"

BACKEND_ENV = "SAMPLE_SMART_BACKEND"
BACKENDS = ("eager", "compiled")
_backend: str | None = None  # None: not read yet (read from the environment on first use)


def _check(name: object, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"{source} is invalid: allowed {', '.join(repr(b) for b in BACKENDS)}")
    return name.strip().lower()


def get_backend() -> str:
    """The processor backend: ``'eager'`` or ``'compiled'``.

    Unless :func:`set_backend` chose one, read from ``SAMPLE_SMART_BACKEND`` (default ``eager``) on
    first use, so a bad value raises ValueError at the first processor call, not at import."""
    global _backend
    if _backend is None:
        value = os.environ.get(BACKEND_ENV, "eager") or "eager"
        _backend = _check(value, f"{BACKEND_ENV}={value!r}")
    return _backend


def set_backend(name: str | None) -> None:
    """Choose the backend for this process: ``'eager'`` or ``'compiled'``; ``None`` re-reads
    ``SAMPLE_SMART_BACKEND`` on next use. ValueError on any other value."""
    global _backend
    _backend = None if name is None else _check(name, f"set_backend({name!r}) ({BACKEND_ENV} backend)")


def use_compiled(t: torch.Tensor) -> bool:
    """True when the compiled backend runs for tensor ``t`` (not already inside a compile)."""
    return not torch.compiler.is_compiling() and get_backend() == "compiled"


def use_cpu_fast_path(t: torch.Tensor) -> bool:
    """True when the opt-in CPU fast path applies to tensor ``t``."""
    return CPU_FAST_PATH and t.device.type == "cpu" and not torch.compiler.is_compiling()
