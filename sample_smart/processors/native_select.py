"""The k largest logits of CPU rows from their chunk maxima, in a small C++ loop (no aten ``topk``).

Why: on CPU, aten's ``topk`` branches on the data and sorts (value, index) pairs; on the fresh
logits of every decoding step its calls cost 2-4x what they cost on one tensor timed over and over
(measured in benchmarks/README.md), and the candidate selection of
:func:`~sample_smart.processors.select.largest_values` takes two of them plus a gather.

The selection, per row, from the chunk maxima ``cmax`` (``C = ceil(V / W)`` chunks of ``W``
logits, the last one partial) that the threshold program already computed:

1. ``t`` = the k-th largest chunk max (``nth_element`` over the C maxima; ``k >= C``: ``t = -inf``);
2. every logit ``>= t`` of the chunks whose max is ``>= t``: at least ``k`` of them, since each of
   the ``k`` chunks with the largest maxima holds its max; and every one of the row's k largest
   values is ``>= t`` (there are ``k`` values ``>= t``), so they are all among them;
3. ``nth_element`` and a sort of those: the k largest, descending (the same values as
   ``torch.topk(x, k).values``; only the values are returned, so ties are interchangeable).

A row whose maxima hold a NaN is selected exactly as ``topk`` does (NaN above every number).
Each row may have its own k (``ks``, at most the call's k; the rest of its output row is ``-inf``),
so rows that need 20, 50 and 300 values are selected in one call, each as far as it needs. Rows
and ks are checked against the tensors' bounds before anything is read. Rows run in parallel
(OpenMP, the caller's torch thread count). The kernel (``kernels/select.cpp``) is part of the library of
:mod:`~sample_smart.processors.native`, built once per source and machine when :func:`load` is
first called (``plans.prepare``, at start-up); without a compiler :func:`load` returns False and
callers keep aten's ``topk``.
"""

from __future__ import annotations

import ctypes

import torch

from sample_smart.processors import native

__all__ = ["available", "largest_values", "load"]


I64, PTR = ctypes.c_int64, ctypes.c_void_p
ARGTYPES = [PTR, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, PTR, ctypes.c_int]


def load() -> bool:
    """Build (once) and load the native kernels' library (:mod:`~sample_smart.processors.native`);
    False (with one warning) when it cannot be."""
    return native.load()


def available() -> bool:
    """Whether the library is loaded in this process (never builds)."""
    return native.available()


def largest_values(
    x: torch.Tensor,
    k: int,
    cmax: torch.Tensor,
    width: int,
    rows: torch.Tensor | None = None,
    ks: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``[R, k]``: the k largest values of the rows ``rows`` of ``x`` (all rows: None), descending,
    from their chunk maxima ``cmax`` ([R, ceil(V / width)]); None when this does not apply (the
    library not loaded, not a contiguous float32 CPU tensor, a row or a k out of range, ...): the
    caller selects otherwise. ``ks`` (int64 [R], each in ``[1, k]``): row r's own k; its values
    past ``ks[r]`` are ``-inf`` (a batch whose rows need different k is selected in one call, each
    row only as far as it needs)."""
    if not available() or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2:
        return None
    batch, vocab = x.shape
    if not (1 <= k <= vocab) or not x.is_contiguous():
        return None
    n = batch if rows is None else rows.shape[0]
    host = [t for t in (rows, ks) if t is not None]
    if any(t.dtype != torch.int64 or t.device.type != "cpu" or t.dim() != 1 or t.shape[0] != n for t in host):
        return None
    rows, ks = (None if t is None else t.contiguous() for t in (rows, ks))
    cmax = cmax.to(torch.float32).contiguous()
    if tuple(cmax.shape) != (n, -(-vocab // width)):
        return None
    out = torch.empty(n, k, dtype=torch.float32)
    status = native.function("ss_largest_values_f32", ARGTYPES)(
        x.data_ptr(),
        batch,
        vocab,
        cmax.data_ptr(),
        cmax.shape[1],
        width,
        None if rows is None else rows.data_ptr(),  # null: row r of x
        n,
        k,
        None if ks is None else ks.data_ptr(),  # null: k for every row
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out if status == 0 else None  # 1: a row or a k out of range (checked before any read)
