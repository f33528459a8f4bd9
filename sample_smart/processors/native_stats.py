"""The row statistics' exp pass of CPU float32 rows in one C++ loop: chunk maxima, ``s`` and the
entropy's sum, reading each logit from memory once.

For a row ``x`` (raw logits, ``V`` of them), a shift ``c`` and an inverse temperature ``a`` it
returns (:func:`row_exp_sums`):

- ``cmax``: the max of every chunk of ``CHUNK`` raw logits (:func:`~sample_smart.processors.select.chunk_maxima`,
  bit for bit), and ``M``, the raw row max;
- with the tempered row ``y_i = (x_i - c) a`` and its max ``m = (M - c) a`` (the float operations of
  :func:`~sample_smart.processors.plans.thresholds`), ``d_i = y_i - m``:
  ``S = sum_i exp(d_i)`` and ``T = sum_i exp(d_i) d_i`` with ``d_i`` clamped at ``D_MIN = -87``, from which
  :mod:`~sample_smart.processors.stats` gives ``z = m + ln S`` and the entropy ``H = ln S - T / S``
  in nats.

Given row numbers, :func:`row_exp_sums` reads those rows of ``x`` in place (EDT on a few rows of a
batch: their untempered entropy). :func:`row_exp_sums_at` gives the same sums of rows whose raw
max is already known (one pass of the exp terms, no chunk maxima): the tempered rows' sums after
an untempered pass has given their max and, through their entropy, their EDT temperature.

Why: inductor compiles the chunk maxima and the exp pass as two loops over the batch, so each row
comes from memory twice, and it keeps a sum of more than 4096 terms in its cascade helper (an
accumulator in memory), which made the two-sum pass markedly slower than a one-sum pass
(benchmarks/README.md).
Here each row is read in blocks of 16 chunks: the block's chunk maxima (from memory), then its
``exp`` terms (from the L1 cache), summed in float32 lanes within the block (at most 32 terms per
lane) and in float64 across blocks, relative to the running max (``S <- S e^{m_old - m_new}``,
``T <- e^{m_old - m_new} (T + (m_old - m_new) S)`` when a block raises it: the online softmax of
Milakov & Gimelshein, 2018, "Online normalizer calculation for softmax"), so the sums are at least
as accurate as the compiled pass's.

Conventions, where they differ from ``torch.exp``: the ``exp`` is ATen's ``exp_u20`` polynomial
(:mod:`~sample_smart.processors.fast_exp`; relative error below 4e-7) with ``n = rint(d log2 e)``
taken from the float's bits; ``d`` is first clamped to :data:`D_MIN` ``= -87``, just above
``ln FLT_MIN = -87.34``, so every term and product is a normal float (a token that far below the
top, ``-inf`` included, adds ``1.6e-38`` to ``S``, where ``S >= 1``: nothing a float32 sum keeps).
Clamped at ``ln FLT_MIN`` itself, ``exp`` rounds to subnormals, and on x86 every vector operation
on a subnormal takes a microcode assist: rows whose tokens mostly lie that far below the top (a
low EDT temperature) then took many times as long (benchmarks/README.md). ``y_i - m`` is one fused
multiply-add, ``(x_i - c) a - m``. The kernel (``kernels/stats.cpp``) is part of the library of
:mod:`~sample_smart.processors.native` (built for the machine's vector instructions); without it,
and off the CPU, :func:`row_exp_sums` is the same formulas in torch. Rows run in parallel (OpenMP,
the caller's torch thread count). Logits with NaN are outside the contract (the pipeline refuses
them).
"""

from __future__ import annotations

import ctypes

import torch

from sample_smart.processors import native
from sample_smart.processors.select import CHUNK, chunk_maxima

__all__ = ["applies", "row_exp_sums", "row_exp_sums_at"]

D_MIN = -87.0  # the clamp of d (module docstring), D_MIN of kernels/stats.cpp
I64, PTR = ctypes.c_int64, ctypes.c_void_p
ARGTYPES = [PTR, I64, PTR, I64, I64, I64, PTR, PTR, PTR, PTR, PTR, ctypes.c_int]


def applies(x: torch.Tensor) -> bool:
    """Whether :func:`row_exp_sums` of ``x`` runs the native kernel: float32 rows ([B, V]) on the
    CPU and the library loaded."""
    return native.available() and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2


@torch.library.custom_op("sample_smart::row_exp_sums", mutates_args=())
def row_exp_sums(
    x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cmax, sums)`` of the rows of ``x`` ([B, V] float32): ``cmax`` [B, ceil(V / CHUNK)] the raw
    chunk maxima, ``sums`` [B, 3] the columns ``(M, S, T)`` (module docstring) for the tempered rows
    ``(x - shift) * inv_t`` (``inv_t``, ``shift``: float32 [B]). With ``rows`` (int64 [R], row
    numbers of ``x``, repeats allowed) the same of the rows ``x[rows]``, read in place (no copy):
    ``cmax`` [R, C], ``sums`` [R, 3], ``inv_t`` and ``shift`` [R]. An operator of its own, so a
    compiled program calls it as one opaque kernel."""
    done = _kernel(x, inv_t, shift, None, rows)
    return done if done is not None else _torch_sums(x, inv_t, shift, None, rows)


@row_exp_sums.register_fake
def _(x, inv_t, shift, rows=None):
    batch, vocab = x.shape if rows is None else (rows.shape[0], x.shape[1])
    return x.new_empty(batch, -(-vocab // CHUNK)), x.new_empty(batch, 3)


@torch.library.custom_op("sample_smart::row_exp_sums_at", mutates_args=())
def row_exp_sums_at(x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor, raw_max: torch.Tensor) -> torch.Tensor:
    """:func:`row_exp_sums`' ``sums`` [B, 3] of rows whose raw max ``raw_max`` (float32 [B], its
    ``M`` column, e.g. from an earlier call on the same rows) is known: one pass of the exp terms,
    no chunk maxima (EDT on every row: the tempered sums after the untempered ones)."""
    done = _kernel(x, inv_t, shift, raw_max)
    return (done if done is not None else _torch_sums(x, inv_t, shift, raw_max))[1]


@row_exp_sums_at.register_fake
def _(x, inv_t, shift, raw_max):
    return x.new_empty(x.shape[0], 3)


def _kernel(x, inv_t, shift, raw_max, rows=None) -> tuple[torch.Tensor | None, torch.Tensor] | None:
    """``(cmax, sums)`` from the C++ kernel (``cmax`` None when ``raw_max`` is given: the kernel then
    computes no chunk maxima), of the rows ``rows`` of ``x`` (None: all), or None when it does not
    apply (:func:`applies`) or refuses the shape or a row number (it checks before reading anything)."""
    on_cpu = applies(x) and (rows is None or rows.device.type == "cpu")
    fn = native.function("ss_row_exp_sums_f32", ARGTYPES) if on_cpu else None
    if fn is None:
        return None
    x = x.contiguous()
    given = [t.to(torch.float32).contiguous() for t in (inv_t, shift, *(() if raw_max is None else (raw_max,)))]
    if rows is not None:
        rows = rows.to(torch.int64).contiguous()
    vocab = x.shape[1]
    batch = x.shape[0] if rows is None else rows.shape[0]
    cmax = torch.empty(batch, -(-vocab // CHUNK), dtype=torch.float32) if raw_max is None else None
    sums = torch.empty(batch, 3, dtype=torch.float32)
    status = fn(
        x.data_ptr(),
        x.shape[0],
        None if rows is None else rows.data_ptr(),  # null: every row of x, in order
        batch,
        vocab,
        CHUNK,
        given[0].data_ptr(),
        given[1].data_ptr(),
        None if raw_max is None else given[2].data_ptr(),  # null: the kernel finds the maxima
        None if cmax is None else cmax.data_ptr(),
        sums.data_ptr(),
        torch.get_num_threads(),
    )
    return (cmax, sums) if status == 0 else None


def _torch_sums(
    x: torch.Tensor,
    inv_t: torch.Tensor,
    shift: torch.Tensor,
    raw_max: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """:func:`row_exp_sums` (and, with ``raw_max``, :func:`row_exp_sums_at`, ``cmax`` None) in torch
    (no library, another device): the same formulas, ``torch.exp``."""
    if rows is not None:
        x = x.index_select(0, rows)
    cmax = chunk_maxima(x) if raw_max is None else None
    big = cmax.amax(dim=-1) if raw_max is None else raw_max
    m = (big - shift) * inv_t
    d = ((x - shift.unsqueeze(-1)) * inv_t.unsqueeze(-1) - m.unsqueeze(-1)).clamp(min=D_MIN)
    e = d.exp()
    return cmax, torch.stack([big, e.sum(dim=-1), (e * d).sum(dim=-1)], dim=-1)
