"""Top-p's threshold of the CPU float32 rows whose nucleus is larger than their candidates, by a
radix select on the row's masses in one small C++ loop (and, on request, the row written in place).

Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751) keeps the smallest set of most probable
tokens whose mass reaches p: as a logit threshold (:mod:`~sample_smart.processors.top_p`),
``tau = max { y_j : sum_{y_i >= y_j} exp(y_i - m) >= p s }`` over the tempered row
``y = (x - shift) * inv_t`` (the float operations of :func:`~sample_smart.processors.plans._tempered`),
``m`` its max and ``s = sum exp(y - m)`` (both from the threshold program).

Per row (:func:`top_p_rows`), with the order-preserving 32-bit key of each ``y``:

1. one pass: each token's ``exp(y - m)`` (the vector exp of :mod:`~sample_smart.processors.native_stats`,
   clamped at ``D_MIN``) summed in float64 into 2048 bins by the key's top 11 bits; from the top
   bin down, the bin where the running mass reaches ``p s``;
2. a second pass keeps that bin's tokens with their terms; they are binned by the key's next 11
   bits: the sub-bin where the running mass reaches ``p s``;
3. the tokens sharing those 22 bits (a few, even on a flat row: the bin is 2^10 floats wide), sorted,
   equal values taken together: tau is the first value whose running mass reaches ``p s``.

Two reads of the row, no sort of the vocabulary and no bisection, exact for every row (ties,
adversarial rows included) in the float64 masses of the kernel's ``exp``; where rounding leaves the
running mass a hair short of ``p s`` (``p`` next to 1), the crossing is the lowest token of the
bin that held it, and a row without a finite token keeps its ``tau_in``. The result is
``max(tau_in, min(tau, m))``: the other rules' threshold combined as the search program combines it.
``-inf`` logits carry no mass. Logits with NaN are outside the contract (the pipeline refuses them).

Why: on CPU the search program (:func:`~sample_smart.processors.plans.search`, device-agnostic:
probes, masses and a band) took ~1 ms for the 4 top-p rows of a [32, 49152] batch, and writing the
searched rows eagerly another ~0.6 ms, more than the rest of the step (benchmarks/README.md).
Rows run in parallel (OpenMP, the caller's torch thread count). The kernel (``kernels/top_p.cpp``)
is part of the library of :mod:`~sample_smart.processors.native`; without it, and off the CPU,
callers keep the search program and the eager bisection.
"""

from __future__ import annotations

import ctypes

import torch

from sample_smart.processors import native

__all__ = ["applies", "serves", "settle", "top_p_rows"]

I64, PTR = ctypes.c_int64, ctypes.c_void_p
ARGTYPES = [PTR, I64, PTR, I64, I64, PTR, PTR, PTR, PTR, PTR, PTR, PTR, ctypes.c_int, ctypes.c_int]


def serves(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel takes logits of ``dtype`` on ``device``: float32 on the CPU, the library
    loaded (:func:`applies` also asks for contiguous ``[B, V]`` rows)."""
    return device.type == "cpu" and dtype == torch.float32 and native.available()


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`top_p_rows` runs on ``x``: contiguous float32 rows ([B, V]) on the CPU, and
    the library loaded."""
    return serves(x.device, x.dtype) and x.dim() == 2 and x.is_contiguous()


def settle(
    x: torch.Tensor,
    index: torch.Tensor,
    inv_t: torch.Tensor,
    shift: torch.Tensor,
    m: torch.Tensor,
    s: torch.Tensor,
    p: torch.Tensor,
    tau: torch.Tensor,
    write: bool = False,
) -> torch.Tensor | None:
    """``tau`` [B] with the rows ``index`` (int64 [R], row numbers of ``x``) given their
    :func:`top_p_rows` value; the per-row arguments are the batch's ([B]), picked here. None when
    the kernel does not apply or refuses the call (then nothing was written)."""
    if not applies(x):
        return None
    picked = [t.index_select(0, index) for t in (inv_t, shift, m, s, p, tau)]
    found = top_p_rows(x, index, *picked, write=write)
    return None if found is None else tau.index_copy(0, index, found)


def top_p_rows(
    x: torch.Tensor,
    rows: torch.Tensor,
    inv_t: torch.Tensor,
    shift: torch.Tensor,
    m: torch.Tensor,
    s: torch.Tensor,
    p: torch.Tensor,
    tau: torch.Tensor,
    write: bool = False,
) -> torch.Tensor | None:
    """tau (float32 [R]) of the rows ``x[rows]`` (module docstring), read in place; ``rows`` int64
    [R] row numbers of ``x`` (checked by the kernel before anything is read), ``inv_t``, ``shift``,
    ``m``, ``s``, ``p`` and ``tau`` (the other rules' threshold) float32 [R], the rows' own.
    ``write``: each such row of ``x`` becomes ``y`` where ``y >= tau``, else ``-inf`` (the write
    program's output for float32). None when the kernel does not apply (:func:`applies`) or
    refuses the call (a row number out of range); then nothing was written."""
    fn = native.function("ss_top_p_rows_f32", ARGTYPES) if applies(x) and rows.device.type == "cpu" else None
    if fn is None:
        return None
    rows = rows.to(torch.int64).contiguous()
    count = rows.shape[0]
    given = [t.to(torch.float32).contiguous() for t in (inv_t, shift, m, s, p, tau)]
    if any(t.shape != (count,) for t in given):
        raise ValueError(f"top_p_rows: every per-row tensor must have shape ({count},), one value per row")
    out = torch.empty(count, dtype=torch.float32)
    status = fn(
        x.data_ptr(),
        x.shape[0],
        rows.data_ptr(),
        count,
        x.shape[1],
        *(t.data_ptr() for t in given),
        out.data_ptr(),
        int(write),
        torch.get_num_threads(),
    )
    return out if status == 0 else None
