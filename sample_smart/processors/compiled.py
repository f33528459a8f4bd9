"""The compiled backend: the sync-free chain through ``torch.compile(fullgraph=True)``.

Selected with ``SAMPLE_SMART_BACKEND=compiled`` or ``sample_smart.processors.set_backend("compiled")``
(see :mod:`~sample_smart.processors.paths`); :func:`~sample_smart.processors.pipeline.process_core`
then calls :func:`run`. The program compiled is the default eager one (whole-batch tensor ops,
no host reads; top-p's skip of unneeded work is a ``torch.cond``); inductor fuses its passes over
the logits into a few kernels (C++/OpenMP on CPU, Triton on CUDA).

Compiled callables. Which ops run depends on the host flags of
:class:`~sample_smart.processors.state.BatchState` (``any_*``, ``max_top_k``), the dtype, the
device type and whether the result is written in place; each combination ("key") gets its own
``torch.compile`` region (``isolate_recompiles=True``), so a batch that switches between flag
sets never uses up another combination's recompile budget (``RECOMPILE_LIMIT`` each), and a key
that ever exceeds it says so in a warning (with ``fullgraph=True`` dynamo raises there instead
of silently running eager; :func:`run` then runs the eager program for that call). The batch
dimension is dynamic (``maybe_mark_dynamic``), so a change of batch size does not recompile;
batch size 1 is specialised by dynamo and compiles once more. The vocabulary size is static (it is fixed per
model; a second vocabulary compiles once more, then dynamo makes it dynamic as well).

Cost: the first call per key compiles: on a 2-core CPU 2-12 s for the decoders' chains, ~35 s
for a batch using every knob at once (top-p's exact search included), plus about a third of that
again for batch size 1. Inductor's on-disk FX graph cache cuts a later process's compile of the
same graph to a few seconds (when the graph is cacheable: a ``torch.cond`` in it is not).
:func:`warmup` does it ahead of serving. In place: the write into ``logits`` happens inside the
compiled graph (inductor stores straight into the input buffer; no extra copy).
"""
from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any, Callable

import torch

from sample_smart.processors.state import BatchState

__all__ = ["RECOMPILE_LIMIT", "compiled_count", "describe", "flags_key", "reset", "run", "warmup"]

# Recompiles allowed per key (batch 1 vs the rest, a vocabulary change, a new stride ...). Each key
# is its own region, so this bounds one flag combination only.
RECOMPILE_LIMIT = 16

_FLAG_FIELDS = tuple(f.name for f in fields(BatchState) if f.name.startswith("any_") or f.name == "max_top_k")
_compiled: dict[tuple, Callable[..., torch.Tensor]] = {}
_over_limit: set[tuple] = set()
logger = logging.getLogger(__name__)


def flags_key(state: BatchState) -> tuple:
    """The host flags that fix the compiled program (cached on the state: an engine reuses it)."""
    key = state.__dict__.get("_flags_key")
    if key is None:
        key = tuple(getattr(state, name) for name in _FLAG_FIELDS)
        state.__dict__["_flags_key"] = key
        for f in fields(state):  # every row tensor has the batch as dim 0
            t = getattr(state, f.name)
            if isinstance(t, torch.Tensor):
                torch._dynamo.maybe_mark_dynamic(t, 0)
    return key


def describe(key: tuple) -> str:
    """A key in words: the flags set, max_top_k, dtype, device type, in place or not."""
    flags, dtype, device, inplace = key
    on = [f"{n}={v}" if n == "max_top_k" else n for n, v in zip(_FLAG_FIELDS, flags) if v]
    return f"flags [{', '.join(on)}], {dtype}, {device}, inplace={inplace}"


def _body(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    from sample_smart.processors.pipeline import _process_rows

    return _process_rows(logits, state, inplace, out=None)


def _callable(key: tuple) -> Callable[..., torch.Tensor]:
    fn = _compiled.get(key)
    if fn is None:
        fn = torch.compile(_body, fullgraph=True, dynamic=None, recompile_limit=RECOMPILE_LIMIT,
                           isolate_recompiles=True)
        _compiled[key] = fn
    return fn


def run(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    """The chain on the whole batch through the compiled callable for this batch's key.

    ``inplace``: write into ``logits`` (float32/float64 only; the caller decides). Should a key
    ever exceed ``RECOMPILE_LIMIT``, that call runs the eager program and a warning names the key
    (once per key); the shapes already compiled keep running compiled."""
    from torch._dynamo.exc import FailOnRecompileLimitHit  # not at import: torch._dynamo takes ~1 s

    key = (flags_key(state), logits.dtype, logits.device.type, inplace)
    torch._dynamo.maybe_mark_dynamic(logits, 0)
    try:
        return _callable(key)(logits, state, inplace)
    except FailOnRecompileLimitHit:
        if key not in _over_limit:
            _over_limit.add(key)
            logger.warning("sample_smart: compiled backend hit its recompile limit (%d) for %s; "
                           "shape %s runs eager", RECOMPILE_LIMIT, describe(key), tuple(logits.shape))
        return _body(logits, state, inplace)


def compiled_count() -> int:
    """How many compiled callables (flag combinations) this process holds."""
    return len(_compiled)


def reset() -> None:
    """Drop every compiled callable (and dynamo's caches): the next call per key compiles again."""
    _compiled.clear()
    _over_limit.clear()
    torch._dynamo.reset()


def warmup(state: BatchState, vocab_size: int, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None, inplace: bool = False) -> bool:
    """Compile ahead of serving: run the compiled backend once on random logits of shape
    ``[state.batch_size, vocab_size]`` (and on one row, which dynamo compiles separately, when the
    state has several). Pass the ``inplace`` the engine will use (the vLLM processor: True).

    Returns False without doing anything when the backend is not ``compiled`` or the state uses no
    knob (nothing to compile)."""
    from sample_smart.processors import paths
    from sample_smart.processors.pipeline import process_core

    if paths.get_backend() != "compiled" or state.is_noop:
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
