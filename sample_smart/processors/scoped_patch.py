"""A change to inductor's code generation that holds only for the compiles one thread runs inside
a ``with`` block: the mechanism of :mod:`~sample_smart.processors.fast_exp` and
:mod:`~sample_smart.processors.opt_level`.

A :class:`ScopedPatch` is given ``wrap(active)``, which replaces one inductor function (once per
process) by a version that asks ``active()`` whether the current thread is inside
:meth:`ScopedPatch.compiling` and behaves as inductor's own otherwise, and returns whether it
found what it replaces (another torch: False, and nothing changes)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

__all__ = ["ScopedPatch"]


class ScopedPatch:
    def __init__(self, wrap: Callable[[Callable[[], bool]], bool]) -> None:
        self._wrap = wrap
        self._here = threading.local()
        self._installed: list[bool] = []  # [True/False] once installed() has run
        self._lock = threading.Lock()

    def active(self) -> bool:
        """Whether this thread is inside :meth:`compiling`."""
        return bool(getattr(self._here, "depth", 0))

    def installed(self) -> bool:
        """Whether the patch is in place (put there on the first call)."""
        with self._lock:
            if not self._installed:
                self._installed.append(bool(self._wrap(self.active)))
            return self._installed[0]

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """Inside: the compiles this thread runs get the patched behaviour."""
        self.installed()
        self._here.depth = getattr(self._here, "depth", 0) + 1
        try:
            yield
        finally:
            self._here.depth -= 1
