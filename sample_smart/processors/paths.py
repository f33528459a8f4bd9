"""Which implementation of the chain runs: the sync-free one (default) or the CPU fast path.

Default, on every device: whole-batch tensor ops only. No Python loop over rows, no
``.item()``/``.tolist()``, no branch on tensor values: the code path depends only on which
knobs the batch's configs set, so it is the same program on CUDA, under
``torch.compile(fullgraph=True)`` and on CPU.

CPU fast path (opt-in, ``SAMPLE_SMART_CPU_FAST_PATH=1`` in the environment, or
``paths.CPU_FAST_PATH = True``): on CPU in eager mode, rows go through the chain in
cache-sized blocks, the final write is row by row with ``aten.threshold`` (vectorised on CPU,
unlike ``masked_fill``/``where``) and top-p's fallback search runs only for the rows that need
it. These read small CPU tensors on the host, which on a CPU waits for nothing, and loop over
row blocks in Python; they are measured in ``benchmarks/`` (2-4x faster at [256, 151936] on a
2-core CPU) and give the same kept sets (tests/test_processors_blocks.py).
"""
from __future__ import annotations

import os

import torch

CPU_FAST_PATH: bool = os.environ.get("SAMPLE_SMART_CPU_FAST_PATH", "0") == "1"


def use_cpu_fast_path(t: torch.Tensor) -> bool:
    """True when the opt-in CPU fast path applies to tensor ``t``."""
    return CPU_FAST_PATH and t.device.type == "cpu" and not torch.compiler.is_compiling()
