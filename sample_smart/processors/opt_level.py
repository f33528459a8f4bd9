"""``-O2`` instead of inductor's ``-O3`` for the C++ of the CPU programs that
:mod:`~sample_smart.processors.plans` compiles.

Inductor builds each CPU kernel file with ``g++ -O3``. For the programs' large fused kernels (the
threshold, search and finish programs: one file of up to ~2000 lines each, written with ATen's
explicit vector types), g++ spends most of the processor's cold start there, and ``-O2`` builds
the same file in about 60% of the time, with no loss in the programs' speed: the loops are
vectorised by hand already, so ``-O3``'s extra loop vectorisation and unrolling have little left
to do (both measured, benchmarks/README.md).

The change is scoped as :mod:`~sample_smart.processors.fast_exp`'s: only the compiles this thread
runs inside :func:`compiling` (:func:`~sample_smart.processors.plans.prepare` uses it) get
``-O2``; any other compile in the process gets inductor's flags. The flags are part of the key of
the built library in inductor's cache, so a file built with ``-O2`` is never loaded for an ``-O3``
build of the same code, nor the reverse. Where inductor's flag function is not where this module
expects it (another torch), nothing changes: the programs are built with ``-O3``.
"""

from __future__ import annotations

from sample_smart.processors.scoped_patch import ScopedPatch

__all__ = ["LEVEL", "compiling", "installed"]

LEVEL = "O2"  # the level inside compiling(); inductor's own is "O3"


def _wrap(active) -> bool:
    """Wrap inductor's optimisation-flag function: ``LEVEL`` for ``O3`` while ``active()``."""
    try:
        from torch._inductor import cpp_builder
    except ImportError:
        return False
    usual = getattr(cpp_builder, "_get_optimization_cflags", None)
    if not callable(usual):
        return False

    def flags(*args, **kwargs):
        cflags, ldflags = usual(*args, **kwargs)
        if active():
            cflags = [LEVEL if flag == "O3" else flag for flag in cflags]
        return cflags, ldflags

    flags.__wrapped__ = usual
    cpp_builder._get_optimization_cflags = flags
    return True


_patch = ScopedPatch(_wrap)
installed = _patch.installed  # whether this torch's inductor builds with -O2 inside compiling()
compiling = _patch.compiling  # inside: the CPU kernels of this thread's compiles are built with -O2
