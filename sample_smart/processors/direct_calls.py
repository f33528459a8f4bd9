"""Call a prepared program's one compiled graph without going through ``torch.compile``'s wrapper.

Every call of a ``torch.compile``-d function goes through its wrapper: it sets dynamo's frame
callback, the stance, the recompile region and the thread's dispatch state, enters the function's
frame, looks up the cache entry and then runs the entry's *transformed bytecode*, a plain Python
function of the same arguments that flattens them, calls the compiled graph and rebuilds the
outputs. :mod:`~sample_smart.processors.plans` holds exactly one cache entry per program and plan
once :func:`~sample_smart.processors.plans.prepare` has run (it checks that with dynamo's guards),
so after it the transformed bytecode can be called directly: same graph, same code, same
outputs, none of the wrapper's work (its share is in benchmarks/README.md).

What the wrapper and the guards no longer check on such a call is checked here or is fixed by
construction:

- dtypes, devices, strides, grad mode, the state's parameters: fixed by the programs' signature,
  ``plans._fits`` and ``BatchState.has_layout`` (checked before any program runs, as for the
  guard-free calls of the wrapper);
- sizes: dynamo specialises a size of 0 or 1 and makes the others of a dynamic dimension one
  symbol. :class:`Shapes` records the sizes every tensor argument had while ``prepare`` compiled
  and checked the program; a dimension that took several sizes there is dynamic and must be at
  least 2 at a call, one that took a single size must have it. A call that does not fit runs
  through the wrapper (which refuses it: the caller's batch then runs eager).

The transformed bytecode runs with its own copy of the module's globals, so the compiled graphs it
names stay reachable if dynamo drops its caches (``torch._dynamo.reset``). Where this torch does
not expose the cache entries of a recompile region (another version), :func:`bytecode_of` returns
None and the wrapper is called as before.
"""

from __future__ import annotations

import types
from typing import Callable, Sequence

import torch

__all__ = ["Shapes", "bytecode_of"]


def bytecode_of(fn: Callable, region: Callable) -> Callable | None:
    """``fn``'s transformed bytecode in ``region`` (``torch.compile(fn, isolate_recompiles=True)``) as
    a function of ``fn``'s arguments, when the region holds exactly one cache entry; else None."""
    try:
        from torch._dynamo.eval_frame import _get_cache_entries_for_region

        entries = _get_cache_entries_for_region(fn.__code__, region._isolate_recompiles_id)
    except (ImportError, AttributeError, TypeError, RuntimeError):
        return None
    if len(entries) != 1:
        return None
    code = getattr(entries[0], "code", None)
    if not isinstance(code, types.CodeType) or code.co_argcount != fn.__code__.co_argcount:
        return None
    return types.FunctionType(code, dict(fn.__globals__), fn.__name__, fn.__defaults__)


class Shapes:
    """The sizes of a program's tensor arguments seen while it was compiled and checked, and the
    test a later call's arguments must pass to skip the wrapper (see the module's docstring)."""

    def __init__(self) -> None:
        self._seen: list[list[set[int]]] | None = None
        self._spec: tuple[tuple[int | None, ...], ...] | None = None
        self.bad = False  # the calls seen disagreed on the arguments' number or ranks

    def note(self, tensors: Sequence[torch.Tensor]) -> None:
        """One call's tensor arguments (in ``plans._tensors_in(args, states=False)`` order), while preparing."""
        shapes = [tuple(t.shape) for t in tensors]
        if self._seen is None:
            self._seen = [[{n} for n in shape] for shape in shapes]
        elif len(shapes) != len(self._seen) or any(len(a) != len(b) for a, b in zip(shapes, self._seen)):
            self.bad = True
        else:
            for sizes, shape in zip(self._seen, shapes):
                for seen, n in zip(sizes, shape):
                    seen.add(n)
        self._spec = None

    def spec(self) -> tuple[tuple[int | None, ...], ...] | None:
        """Per argument and dimension: the one size it must have, or None (dynamic: at least 2)."""
        if self._spec is None and self._seen is not None and not self.bad:
            self._spec = tuple(tuple(None if len(s) > 1 else next(iter(s)) for s in sizes) for sizes in self._seen)
        return self._spec

    def fit(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether a call with these tensor arguments is one the compiled graph was made for."""
        spec = self.spec()
        if spec is None or len(tensors) != len(spec):
            return False
        for t, want in zip(tensors, spec):
            shape = t.shape
            if len(shape) != len(want):
                return False
            for n, w in zip(shape, want):
                if (n < 2) if w is None else (n != w):
                    return False
        return True
