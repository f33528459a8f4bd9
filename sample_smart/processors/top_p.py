"""Top-p (nucleus) threshold without sorting the vocabulary.

Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751) keeps the smallest set of most probable
tokens whose mass reaches p. As a logit threshold: with ``M(t) = sum_{x_i >= t} p_i`` (non-increasing
in t), ``tau = max { x_j : M(x_j) >= p }`` and the row keeps ``x >= tau`` (ties at tau all stay,
as with a stable sort-and-cumsum). Masses are handled in units of ``e_i = exp(x_i - m)``:
``M(t) >= p  <=>  sum_{x_i >= t} e_i >= p * s``, ``s = sum_i e_i``.

1. **Candidates.** The ``CANDIDATES`` largest logits (shared with top-k, see ``select``) and their
   running mass. If it reaches ``p s``, tau is the first candidate where it does: exact, and the
   usual case for language models (the nucleus is rarely more than a few hundred tokens).
2. **Search** for the other rows (flat distributions), in a fixed number of passes, never a sort
   of the vocabulary. Every pass keeps a bracket ``M(lo) >= p s > M(hi)``:

   - start: ``lo = z + ln((1 - p) / V)`` (tokens below it carry less than ``1 - p`` in total) and
     ``hi = +inf``;
   - pass 1: probes from a sorted strided sample of the row (``SAMPLE`` logits). The sample
     estimates the mass *below* a value (the tail, where the many small tokens make the estimate
     good), and ``PROBE_OFFSETS`` sample ranks around the estimated crossing, plus the last
     candidate, are probed with exact masses;
   - pass 2: ``FINE_PROBES`` probes evenly spaced inside the bracket;
   - finish: the ``BAND`` largest logits in ``[lo, hi)`` and their running mass on top of
     ``M(hi)`` give tau exactly when the bracket holds at most ``BAND`` tokens (or one tied value).

   The probes only decide how fast the bracket shrinks; every mass is exact, so the result never
   depends on the sample. Rows whose bracket still holds more than ``BAND`` distinct tokens (rare:
   adversarial rows) finish with a bisection on the order-preserving integer image of the floats
   (32 steps for float32), which is exact for any row.
   On CPU float32 rows (the library of :mod:`~sample_smart.processors.native` loaded) steps 2's
   search and bisection are replaced by :mod:`~sample_smart.processors.native_top_p`'s radix select
   on the masses, exact in float64 for every row, in the eager chain and in the compiled programs
   alike (both then keep the same tokens).
3. **No host sync.** On CUDA every step runs for every row and ``where`` picks the result. On CPU
   the search and the bisection run only when some row needs them: decided by ``torch.cond``
   under ``torch.compile`` and by reading the CPU flag in eager mode (a CPU tensor has no device
   to wait for).
"""

from __future__ import annotations

import torch

from sample_smart.processors import native_top_p
from sample_smart.processors.select import largest_values

__all__ = ["CANDIDATES", "BAND", "top_p_tau"]

CANDIDATES = 128  # size of the candidate set (the row's largest logits)
SAMPLE = 1024  # about this many logits in the strided sample that places the first probes
PROBE_OFFSETS = (-48, -16, -6, -2, 2, 6, 16, 48)  # sample ranks around the estimated crossing
FINE_STEPS = tuple(sorted((sgn * 2.0**-k for k in range(1, 9) for sgn in (1, -1)), reverse=True))
# ... second pass: probes at these fractions of the bracket around the interpolated crossing
BAND = 128  # the finish resolves a bracket of at most this many tokens exactly

_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _to_key(t: torch.Tensor) -> torch.Tensor:
    """Order-preserving map float -> signed int (as int64): a < b  <=>  key(a) < key(b) (no NaN)."""
    bits = t.view(_INT[t.dtype])
    mask = torch.iinfo(bits.dtype).max
    return torch.where(bits < 0, bits ^ mask, bits).to(torch.int64)


def _from_key(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    ity = _INT[dtype]
    bits = k.to(ity)
    mask = torch.iinfo(ity).max
    return torch.where(bits < 0, bits ^ mask, bits).view(dtype)


def _where_running(t: torch.Tensor) -> str:
    """How the code around tensor ``t`` runs, the one place top-p asks: ``"device"`` (CUDA and
    other accelerators: never read a value back), ``"compiled"`` (CPU under ``torch.compile``) or
    ``"eager_cpu"`` (a CPU tensor op by op: reading a flag waits for nothing)."""
    if t.device.type != "cpu":
        return "device"
    return "compiled" if torch.compiler.is_compiling() else "eager_cpu"


def _masses(x: torch.Tensor, e: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """``[B, J]``: the exact mass ``sum_{x_i >= probes[:, j]} e_i`` of each probe (one pass over
    the row under ``torch.compile``, where the J sums fuse)."""
    if _where_running(x) == "eager_cpu":
        # eager CPU: ``where`` is not vectorised there; a 0/1 float mask times e is much faster
        keep = torch.empty_like(x)
        return torch.stack(
            [torch.ge(x, probes[:, j : j + 1], out=keep).mul_(e).sum(dim=-1) for j in range(probes.shape[-1])], dim=-1
        )
    width = sum_chunk(x.shape[-1]) if x.dim() == 2 else None
    if width is not None:  # compiled: sums of at most 4096 terms, then of the chunks (see sum_chunk)
        x, e, probes = x.unflatten(-1, (-1, width)), e.unflatten(-1, (-1, width)), probes.unsqueeze(-1)
    sums = [torch.where(x >= probes[:, j : j + 1], e, 0.0).sum(dim=-1) for j in range(probes.shape[1])]
    return torch.stack([t.sum(dim=-1) for t in sums] if width is not None else sums, dim=-1)


def sum_chunk(vocab: int) -> int | None:
    """The width of the chunks in which compiled code sums a row of ``vocab`` masses: the largest
    divisor of ``vocab`` in [512, 4096] (None: sum the row at once). Inductor's CPU code sums a
    float32 reduction of more than 4096 terms with a cascade helper per accumulator, which costs
    several times a plain vector add when a pass holds many sums (the probes); chunk sums of at
    most 4096 terms are plain (each lane adds at most 256 terms), and their sum is a second small
    reduction. Measured in benchmarks/README.md."""
    for width in range(min(vocab, 4096), 511, -1):
        if vocab % width == 0:
            return width
    return None


def _narrow(
    probes: torch.Tensor,
    masses: torch.Tensor,
    target: torch.Tensor,
    lo: torch.Tensor,
    mass_lo: torch.Tensor,
    hi: torch.Tensor,
    mass_hi: torch.Tensor,
):
    """The new bracket from probes sorted descending (so ``masses`` ascending): ``lo`` = the highest
    probe whose mass reaches the target, ``hi`` = the probe above it (or the old bounds)."""
    above = (masses < target.unsqueeze(-1)).sum(dim=-1, keepdim=True)  # probes above tau

    def pick(old: torch.Tensor, new: torch.Tensor, low: bool) -> torch.Tensor:
        both = torch.cat([new, old.unsqueeze(-1)] if low else [old.unsqueeze(-1), new], dim=-1)
        return both.gather(1, above).squeeze(1)

    return (pick(lo, probes, True), pick(mass_lo, masses, True), pick(hi, probes, False), pick(mass_hi, masses, False))


def _sample_probes(
    x: torch.Tensor, m: torch.Tensor, s: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor
) -> torch.Tensor:
    """Probes (descending) around the crossing estimated from a strided sample of the row."""
    vocab = x.shape[-1]
    stride = max(1, vocab // SAMPLE)
    sample = torch.sort(x[:, ::stride], dim=-1).values  # ascending
    n = sample.shape[-1]
    below = (sample - m.unsqueeze(-1)).exp_().cumsum_(dim=-1).mul_(vocab / n)  # est. mass <= sample
    cross = (below < (s - target).unsqueeze(-1)).sum(dim=-1, keepdim=True)
    return sample.gather(1, (cross - offsets).clamp_(0, n - 1))  # descending


def _search(
    x: torch.Tensor,
    m: torch.Tensor,
    e: torch.Tensor,
    s: torch.Tensor,
    top_p: torch.Tensor,
    v_last: torch.Tensor,
    offsets: torch.Tensor,
    steps: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Bracket and finish for every row (step 2 of the module doc).

    Returns (tau, exact, lo, hi): ``exact`` is False where the bracket ``[lo, hi)`` still held more
    than ``BAND`` distinct tokens, so tau needs :func:`_bisect_keys`."""
    vocab = x.shape[-1]
    target = top_p * s
    z = m + s.log()
    lo = torch.minimum(z + torch.log((1.0 - top_p) / vocab), v_last)  # M(lo) >= p s
    mass_lo = s  # an upper bound of M(lo) until lo is a probe
    hi = torch.full_like(lo, float("inf"))
    mass_hi = torch.zeros_like(lo)
    probes = torch.cat([v_last.unsqueeze(-1), _sample_probes(x, m, s, target, offsets)], dim=-1)
    probes = torch.maximum(torch.minimum(probes, v_last.unsqueeze(-1)), lo.unsqueeze(-1))
    probes = torch.sort(probes, dim=-1, descending=True).values
    lo, mass_lo, hi, mass_hi = _narrow(probes, _masses(x, e, probes), target, lo, mass_lo, hi, mass_hi)
    # pass 2: around the linear interpolation of M between the bracket's ends, spaced geometrically
    top = torch.minimum(hi, v_last)  # hi = +inf only if v_last itself fell short
    span = top - lo
    frac = ((mass_lo - target) / (mass_lo - mass_hi).clamp(min=torch.finfo(s.dtype).tiny)).clamp(0.0, 1.0)
    guess = lo + span * frac
    probes = torch.minimum(
        torch.maximum(guess.unsqueeze(-1) + span.unsqueeze(-1) * steps, lo.unsqueeze(-1)), top.unsqueeze(-1)
    )
    lo, mass_lo, hi, mass_hi = _narrow(probes, _masses(x, e, probes), target, lo, mass_lo, hi, mass_hi)
    tau, exact = _finish(x, m, target, lo, hi, mass_hi)
    return tau, exact, lo, hi


def _finish(
    x: torch.Tensor, m: torch.Tensor, target: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, mass_hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """tau from a bracket ``M(lo) >= target > M(hi) = mass_hi``: the running mass of the bracket's
    ``BAND`` largest logits on top of ``mass_hi``. Returns (tau, exact); ``exact`` is False where the
    bracket holds more than ``BAND`` tokens, more than one distinct value, and the crossing lies
    below its ``BAND`` largest."""
    band = (x >= lo.unsqueeze(-1)) & (x < hi.unsqueeze(-1))
    n_band = band.sum(dim=-1)
    cand = largest_values(torch.where(band, x, float("-inf")), BAND)  # [B, k] descending
    k = cand.shape[-1]
    cum = (cand - m.unsqueeze(-1)).exp().cumsum(dim=-1) + mass_hi.unsqueeze(-1)
    j = (cum < target.unsqueeze(-1)).sum(dim=-1)
    last = (torch.minimum(n_band, torch.full_like(n_band, k)) - 1).clamp(min=0)  # lowest band token
    tau = cand.gather(1, torch.minimum(j, last).unsqueeze(-1)).squeeze(1)
    tau = torch.where(n_band > 0, tau, lo)
    # a bracket holding one (tied) value: M(lo) >= target with nothing else in [lo, hi), so tau is it
    one_value = (x == cand[:, :1]).sum(dim=-1) == n_band  # every band token equals the largest
    exact = (n_band <= k) | (j < k) | one_value  # j < k: tau is among the band's top k anyway
    return tau, exact


def _bisect_keys(
    x: torch.Tensor, e: torch.Tensor, target: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """Exact tau inside a bracket ``M(lo) >= target > M(hi)`` by bisection on float keys: a fixed
    number of steps (32 for float32), no host sync, fixed shapes."""
    klo, khi = _to_key(lo), _to_key(hi)
    for _ in range(32 if x.dtype == torch.float32 else 64):
        mid = klo + torch.div(khi - klo, 2, rounding_mode="floor")
        ok = _masses(x, e, _from_key(mid, x.dtype).unsqueeze(-1)).squeeze(-1) >= target
        klo = torch.where(ok, mid, klo)
        khi = torch.where(ok, khi, mid)
    return _from_key(klo, x.dtype)


def _bisect_rows(
    x: torch.Tensor,
    e: torch.Tensor,
    target: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    rows: torch.Tensor,
    tau: torch.Tensor,
) -> torch.Tensor:
    """``tau`` with the bisection's exact value in the ``rows`` (bool [B]) the search left inexact."""
    return torch.where(rows, _bisect_keys(x, e, target, lo, hi), tau)


def _run_if(flag: torch.Tensor, fn, operands: tuple, otherwise: torch.Tensor) -> torch.Tensor:
    """``fn(*operands)`` if any ``flag``, else ``otherwise``, without a device sync.

    CUDA: always computed (``fn`` selects its rows with ``where``). CPU: skipped when no row needs
    it: by ``torch.cond`` under ``torch.compile`` and by reading the CPU flag in eager mode (a CPU
    tensor has no device to wait for)."""
    mode = _where_running(flag)
    if mode == "device":
        return fn(*operands)
    if mode == "compiled":
        return torch.cond(flag.any(), fn, lambda *args: otherwise.clone(), operands)
    return fn(*operands) if bool(flag.any()) else otherwise


def candidate_tau(
    values: torch.Tensor, m: torch.Tensor, s: torch.Tensor, top_p: torch.Tensor, width: torch.Tensor, vocab: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1 alone: ``(tau, need, v_last)`` from the row's largest logits ``values`` (descending; row
    r's first ``width[r]`` are its candidates, the rest is not read) with ``m`` the row max and
    ``s = sum exp(x - m)``. ``need`` marks the rows whose nucleus is larger than their candidates
    (never a row whose candidates are all ``vocab`` logits): their tau is ``-inf`` here and comes
    from the search, which starts from ``v_last``, the smallest candidate. ``-inf`` where
    ``top_p >= 1`` (off)."""
    on = top_p < 1.0
    p = torch.where(on, top_p, torch.zeros_like(top_p))  # off rows: found at j = 0
    last = (width - 1).unsqueeze(-1)
    cum = (values - m.unsqueeze(-1)).exp().cumsum(dim=-1)
    # cum is non-decreasing, so the count below the target within the row's own candidates is
    # min(count, width), whatever lies past them
    j = torch.minimum((cum < (p * s).unsqueeze(-1)).sum(dim=-1), width)
    tau = values.gather(1, torch.minimum(j.unsqueeze(-1), last)).squeeze(-1)
    v_last = values.gather(1, last).squeeze(-1)
    need = (j >= width) & torch.isfinite(v_last) & (width < vocab)
    return torch.where(on & ~need, tau, torch.full_like(tau, float("-inf"))), need, v_last


def _native_rows(
    x: torch.Tensor, m: torch.Tensor, s: torch.Tensor, p: torch.Tensor, need: torch.Tensor, tau: torch.Tensor
) -> torch.Tensor | None:
    """Eager CPU float32: ``tau`` with the rows ``need`` marks settled by the C++ radix select of
    :mod:`~sample_smart.processors.native_top_p` (the compiled programs' CPU path takes the same
    kernel, so both keep the same tokens); None where it does not apply (then the search runs)."""
    if _where_running(x) != "eager_cpu" or not native_top_p.applies(x):
        return None
    index = need.nonzero().squeeze(1)
    if not index.numel():
        return tau
    own = torch.where(need, float("-inf"), tau)  # the rows in need: the kernel's tau alone
    return native_top_p.settle(x, index, torch.ones_like(m), torch.zeros_like(m), m, s, p, own)  # x is tempered


def top_p_tau(
    x: torch.Tensor,
    m: torch.Tensor,
    e: torch.Tensor,
    s: torch.Tensor,
    top_p: torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """tau per row (see module doc); ``-inf`` where ``top_p >= 1`` (off).

    ``x`` [B, V] tempered logits, ``m`` row max, ``e = exp(x - m)``, ``s = sum e``; ``values``: the
    largest logits per row, sorted descending (at least ``min(CANDIDATES, V)`` columns), if known.
    """
    vocab = x.shape[-1]
    kc = min(vocab, CANDIDATES)
    if values is None or values.shape[-1] < kc:
        values = largest_values(x, kc)
    on = top_p < 1.0
    p = torch.where(on, top_p, torch.zeros_like(top_p))  # off rows: found at j = 0
    target = p * s
    cum = (values - m.unsqueeze(-1)).exp().cumsum(dim=-1)
    kv = values.shape[-1]
    j = (cum < target.unsqueeze(-1)).sum(dim=-1)
    tau = values.gather(1, j.clamp(max=kv - 1).unsqueeze(-1)).squeeze(-1)
    if kv < vocab:
        v_last = values[:, -1]
        need = (j >= kv) & torch.isfinite(v_last)  # candidates hold less than p (flat rows)

        # made here: torch.cond's branches must not create tensors from Python lists
        offsets = torch.tensor(PROBE_OFFSETS, device=x.device)
        steps = torch.tensor(FINE_STEPS, device=x.device, dtype=x.dtype)  # descending

        def search(x, m, e, s, p, v_last, need, tau, offsets, steps):
            found, exact, lo, hi = _search(x, m, e, s, p, v_last, offsets, steps)
            bad = need & ~exact
            found = _run_if(bad, _bisect_rows, (x, e, p * s, lo, hi, bad, found), found)
            return torch.where(need, found, tau)

        found = _native_rows(x, m, s, p, need, tau)
        if found is not None:
            tau = found
        else:
            tau = _run_if(need, search, (x, m, e, s, p, v_last, need, tau, offsets, steps), tau)
    return torch.where(on, tau, torch.full_like(tau, float("-inf")))
