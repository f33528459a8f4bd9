"""The compiled backend: the sync-free chain through ``torch.compile(fullgraph=True)``.

Selected with ``SAMPLE_SMART_BACKEND=compiled`` or ``sample_smart.processors.set_backend("compiled")``
(see :mod:`~sample_smart.processors.dispatch`); :func:`~sample_smart.processors.dispatch.process_core`
then calls :func:`run`. The program compiled is the default eager one (whole-batch tensor ops,
no host reads; top-p's skip of unneeded work is a ``torch.cond``); inductor fuses its passes over
the logits into a few kernels (C++/OpenMP on CPU, Triton on CUDA).

Compiled callables. Which ops run depends on the host values of
:class:`~sample_smart.processors.state.BatchState` (``state.key``: the active rules, the number of
candidates, the temperature flags), the dtype, the
device type and whether the result is written in place; each combination ("key") gets its own
``torch.compile`` region (``isolate_recompiles=True``), so a batch that switches between flag
sets never uses up another combination's recompile budget (``RECOMPILE_LIMIT`` each), and a key
that ever exceeds it says so in a warning (with ``fullgraph=True`` dynamo raises there instead
of silently running eager; :func:`run` then runs the eager program for that call). The batch
dimension is dynamic (``maybe_mark_dynamic``), so a change of batch size does not recompile;
batch size 1 is specialised by dynamo and compiles once more. The vocabulary size is static (it is fixed per
model; a second vocabulary compiles once more, then dynamo makes it dynamic as well).

Cost: the first call per key compiles (seconds to tens of seconds on a CPU; measured in
benchmarks/README.md), batch size 1 once more. Inductor's on-disk FX graph cache cuts a later
process's compile of the same graph (when the graph is cacheable: a ``torch.cond`` in it is not).
:func:`~sample_smart.processors.dispatch.warmup` does it ahead of serving. In place: the write
into ``logits`` happens inside the compiled graph (inductor stores straight into the input buffer; no extra copy).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from sample_smart.processors import chain
from sample_smart.processors.state import BatchState

__all__ = ["RECOMPILE_LIMIT", "compiled_count", "describe", "reset", "run"]

# Recompiles allowed per key (batch 1 vs the rest, a vocabulary change, a new stride ...). Each key
# is its own region, so this bounds one flag combination only.
RECOMPILE_LIMIT = 16

_compiled: dict[tuple, Callable[..., torch.Tensor]] = {}
_over_limit: set[tuple] = set()
logger = logging.getLogger(__name__)


def _mark_batch_dynamic(state: BatchState, logits: torch.Tensor) -> None:
    """The batch dimension is dynamic: a new batch size does not recompile (dynamo still
    specialises batch size 1)."""
    torch._dynamo.maybe_mark_dynamic(logits, 0)
    for t in state.tensors():
        torch._dynamo.maybe_mark_dynamic(t, 0)


def describe(key: tuple) -> str:
    """A key in words: the active rules, candidates, transforms, dtype, device type, in place or not."""
    (rules, candidates, any_temperature, any_edt), dtype, device, inplace = key
    on = (
        list(rules)
        + [f"candidates={candidates}"] * bool(candidates)
        + ["temperature"] * any_temperature
        + ["edt"] * any_edt
    )
    return f"rules [{', '.join(on)}], {dtype}, {device}, inplace={inplace}"


def _body(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    return chain.run(logits, state, inplace)


def _callable(key: tuple) -> Callable[..., torch.Tensor]:
    fn = _compiled.get(key)
    if fn is None:
        fn = torch.compile(
            _body, fullgraph=True, dynamic=None, recompile_limit=RECOMPILE_LIMIT, isolate_recompiles=True
        )
        _compiled[key] = fn
    return fn


def run(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    """The chain on the whole batch through the compiled callable for this batch's key.

    ``inplace``: write into ``logits`` (float32/float64 only; the caller decides). Should a key
    ever exceed ``RECOMPILE_LIMIT``, that call runs the eager program and a warning names the key
    (once per key); the shapes already compiled keep running compiled."""
    from torch._dynamo.exc import FailOnRecompileLimitHit  # not at import: torch._dynamo takes ~1 s

    key = (state.key, logits.dtype, logits.device.type, inplace)
    _mark_batch_dynamic(state, logits)
    try:
        return _callable(key)(logits, state, inplace)
    except FailOnRecompileLimitHit:
        if key not in _over_limit:
            _over_limit.add(key)
            logger.warning(
                "sample_smart: compiled backend hit its recompile limit (%d) for %s; shape %s runs eager",
                RECOMPILE_LIMIT,
                describe(key),
                tuple(logits.shape),
            )
        return _body(logits, state, inplace)


def compiled_count() -> int:
    """How many compiled callables (flag combinations) this process holds."""
    return len(_compiled)


def reset() -> None:
    """Drop every compiled callable (and dynamo's caches): the next call per key compiles again."""
    _compiled.clear()
    _over_limit.clear()
    torch._dynamo.reset()
