"""The k largest logits of each row without a vocabulary-wide ``topk``.

Two-level selection: split each row into chunks of ``CHUNK`` logits and take every chunk's max
(one read of the row). Each of the row's k largest values lies in a chunk whose max is at least
that value, and at most k chunks have a max of at least the k-th largest value (each such chunk
holds a distinct element that large), so the k largest values of the row are the k largest values
of the union of the k chunks with the largest maxima (plus the last, partial chunk, which is
always included). ``topk`` then runs on ``k * CHUNK`` values instead of V. Ties are harmless: only
the values are returned, and tied values are interchangeable.

On CPU ``torch.topk`` over [256, 151936] costs about 5-7 reads of the tensor even for small k;
the chunk maxima cost about one. When they are known (the threshold programs return them), a
float32 CPU batch is selected by :mod:`~sample_smart.processors.native_select` instead (the same
two levels in one C++ loop per row, no aten ``topk``). Fixed shapes and no host reads, so it also runs under
``torch.compile(fullgraph=True)`` and on CUDA.
"""

from __future__ import annotations

import torch

from sample_smart.processors import native_select

__all__ = ["CHUNK", "chunk_maxima", "largest_values", "uses_chunks"]

CHUNK = 64  # logits per chunk
SUB = 8  # logits per sub-chunk of the selected chunks (the third level)
# eager calls take the third level from this many rows on: below, its three extra ops cost more
# than the smaller final topk saves (measured in benchmarks/README.md); a compiled program always
# takes it (it must not branch on its dynamic batch size)
SUB_ROWS = 64


def uses_chunks(vocab: int, k: int, maxima_known: bool = False) -> bool:
    """Whether the chunk levels pay off for the ``k`` largest of ``vocab`` logits (else one topk):
    when the chunk maxima are still to be computed (one more read), for ``k * CHUNK`` up to a
    quarter of the row; when they are known, up to half of it (measured in benchmarks/README.md)."""
    return k * CHUNK * (2 if maxima_known else 4) <= vocab


def chunk_maxima(x: torch.Tensor) -> torch.Tensor:
    """``[B, ceil(V / CHUNK)]``: the max of every chunk of ``CHUNK`` logits; the last column is the
    partial chunk at the end of the row when ``V`` is not a multiple of ``CHUNK``. Its row max is
    the row max of ``x`` (so callers get ``m`` from it for free). Any non-decreasing map of ``x``
    (a temperature, a shift) maps the chunk maxima alike."""
    batch, vocab = x.shape
    n_full = vocab // CHUNK
    cmax = x[:, : n_full * CHUNK].reshape(batch, n_full, CHUNK).amax(dim=-1)
    if n_full * CHUNK < vocab:
        cmax = torch.cat([cmax, x[:, n_full * CHUNK :].amax(dim=-1, keepdim=True)], dim=-1)
    return cmax


def largest_values(
    x: torch.Tensor,
    k: int,
    cmax: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    ks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``k`` largest values of each row of ``x`` [B, V], sorted descending ([B, k]).

    ``cmax``: :func:`chunk_maxima` of ``x``, when already known. ``rows``: select from these rows
    of ``x`` only (int64 [R]; the result is [R, k] and ``cmax``, if given, holds those R rows), so
    a batch where few rows read candidates gathers from those rows and never copies them. ``ks``
    (int64 [R] on the CPU, each in ``[1, k]``): how many values each row needs; a caller reads row
    r's first ``ks[r]`` values only (past them: ``-inf`` from the native selection, which selects
    each row only that far, or the row's next values)."""
    vocab = x.shape[-1]
    k = max(1, min(k, vocab))
    known = cmax is not None and cmax.shape[-1] == -(-vocab // CHUNK)
    if known and not torch.compiler.is_compiling():
        out = native_select.largest_values(x, k, cmax, CHUNK, rows, ks)  # None: not loaded, not float32 CPU
        if out is not None:
            return out
    if not uses_chunks(vocab, k, known):
        return torch.topk(x if rows is None else x.index_select(0, rows), k, dim=-1, sorted=True).values
    n_full = vocab // CHUNK
    if not known:
        cmax = chunk_maxima(x if rows is None else x.index_select(0, rows))
    top_chunks = torch.topk(cmax[:, :n_full], k, dim=-1, sorted=False).indices  # [R, k]
    batch = top_chunks.shape[0]
    own = torch.arange(batch, device=x.device)
    cand = _chunks(x, own if rows is None else rows, top_chunks, CHUNK)  # [R, k, CHUNK], contiguous
    if torch.compiler.is_compiling() or batch >= SUB_ROWS:
        # a third level: the k largest of the candidates lie in their k sub-chunks with the largest maxima
        per_row = k * (CHUNK // SUB)
        top_sub = torch.topk(cand.view(batch, per_row, SUB).amax(dim=-1), k, dim=-1, sorted=False).indices
        cand = _chunks(cand.view(batch, k * CHUNK), own, top_sub, SUB)
    cand = cand.view(batch, -1)
    if n_full * CHUNK < vocab:  # the partial last chunk always joins the candidates
        tail = x[:, n_full * CHUNK :]
        cand = torch.cat([cand, tail if rows is None else tail.index_select(0, rows)], dim=-1)
    return torch.topk(cand, k, dim=-1, sorted=True).values


def _chunks(x: torch.Tensor, row_of: torch.Tensor, index: torch.Tensor, width: int) -> torch.Tensor:
    """``[R, k, width]``: chunk ``index[i, j]`` (``width`` logits) of row ``row_of[i]`` of ``x``. One
    ``index_select`` of whole chunks when the rows are a grid of chunks (a contiguous ``x`` whose
    width is a multiple of ``width``: most vocabularies), which copies them several times faster
    than a ``gather`` of single elements; else advanced indexing."""
    n = x.shape[-1] // width
    if x.shape[-1] == n * width and x.is_contiguous():
        flat = (row_of.unsqueeze(-1) * n + index).reshape(-1)
        return x.view(-1, width).index_select(0, flat).view(index.shape[0], index.shape[1], width)
    return x[:, : n * width].reshape(x.shape[0], n, width)[row_of.unsqueeze(-1), index]
