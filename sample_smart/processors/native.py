"""The one C++ library of the CPU kernels: built once per source and machine, loaded with ctypes.

Its source is the C++ files of ``sample_smart/processors/kernels/``: the kernels of
:mod:`~sample_smart.processors.native_select` (the candidates' selection),
:mod:`~sample_smart.processors.native_stats` (the row statistics' exp pass) and
:mod:`~sample_smart.processors.native_top_p` (top-p's threshold of the rows the candidates do not
settle), compiled together
by the compiler inductor uses (``$CXX`` or g++) into ``$SAMPLE_SMART_CACHE/native/<hash>/kernels.so``
when :func:`load` is first called
(``plans.prepare``, at start-up). The hash names the source, the flags, torch's version and the
CPU's instruction sets: the library is built for the machine that builds it (``-march=native``;
where the compiler refuses that flag, for its default target), and a cache shared by machines of
other kinds keeps one library per kind. Without a compiler :func:`load` returns False with one
warning and the callers keep their torch formulations.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["available", "function", "load"]

logger = logging.getLogger(__name__)

FLAGS = ("-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC")  # part of the cached library's name
NATIVE_ARCH = "-march=native"  # tried first; dropped when the compiler refuses it

_lock = threading.Lock()
_lib: list = []  # [ctypes library] once loaded, [None] once it could not be


KERNELS = Path(__file__).with_name("kernels")  # one .cpp file per kernel module


def source() -> str:
    """The library's C++ source: the files of :data:`KERNELS` (``select.cpp`` for
    :mod:`~sample_smart.processors.native_select`, ``stats.cpp`` for
    :mod:`~sample_smart.processors.native_stats`, ``top_p.cpp`` for
    :mod:`~sample_smart.processors.native_top_p`), in name order: one translation unit."""
    return "\n".join(path.read_text() for path in sorted(KERNELS.glob("*.cpp")))


def _machine() -> str:
    """What ``-march=native`` depends on: the CPU's instruction sets (Linux), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine()


def _library_path() -> Path:
    from sample_smart.models import cache_dir

    key = " ".join((source(), *FLAGS, NATIVE_ARCH, torch.__version__, _machine()))
    return cache_dir() / "native" / hashlib.sha256(key.encode()).hexdigest()[:16] / "kernels.so"


def _compiler() -> str:
    from torch._inductor.cpp_builder import get_cpp_compiler  # inductor's own search ($CXX, g++)

    return get_cpp_compiler()


def _build(path: Path) -> None:
    """Compile :func:`source` into ``path`` (written under another name, then renamed: a process
    that loads it meanwhile never sees a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp) / "kernels.cpp"
        src.write_text(source())
        part = Path(tmp) / "kernels.so"
        done = None
        for arch in ((NATIVE_ARCH,), ()):
            cmd = [_compiler(), *FLAGS, *arch, str(src), "-o", str(part)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        if done.returncode != 0:
            raise RuntimeError(f"compiling the native kernels failed: {done.stderr.strip()[-500:]}")
        os.replace(part, path)


def load() -> bool:
    """Build (once per source and machine) and load the library; False (with one warning) when it
    cannot be."""
    with _lock:
        if not _lib:
            try:
                path = _library_path()
                if not path.exists():
                    _build(path)
                try:
                    # PyDLL: a call keeps the GIL (the kernels never call Python), so returning never
                    # waits for another thread of the process (an engine's) to hand the GIL back
                    lib = ctypes.PyDLL(str(path))
                except OSError:  # a damaged file in the cache: built again, once
                    _build(path)
                    lib = ctypes.PyDLL(str(path))
                _lib.append(lib)
            except Exception as exc:  # noqa: BLE001 - no compiler, a read-only cache, a failed build
                logger.warning(
                    "sample_smart: the native kernels (candidate selection, row statistics) are unavailable "
                    "(%s); using torch's topk and the compiled exp pass",
                    exc,
                )
                _lib.append(None)
        return _lib[0] is not None


def available() -> bool:
    """Whether :func:`load` succeeded in this process (never builds)."""
    return bool(_lib) and _lib[0] is not None


_functions: dict[tuple, object] = {}


def function(name: str, argtypes: list, restype=ctypes.c_int):
    """The loaded library's function ``name`` with its ctypes signature (None when not loaded)."""
    if not available():
        return None
    key = (name, _lib[0])
    fn = _functions.get(key)
    if fn is None:
        fn = getattr(_lib[0], name)
        fn.argtypes, fn.restype = argtypes, restype
        _functions[key] = fn
    return fn
