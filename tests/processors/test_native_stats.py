"""The native exp pass (sample_smart.processors.native_stats): the chunk maxima and the row max bit
for bit, ``S`` and ``T`` within float32 rounding of their float64 definitions, for every shape,
shift, temperature and masked layout (the max in the first or the last block, rising in every
block), also at a known max in one pass of the exp terms; the same sums from its torch
formulation. That the compiled threshold program calls it: tests/processors/test_plans.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sample_smart.processors import native, native_stats
from sample_smart.processors.select import CHUNK, chunk_maxima


@pytest.fixture(scope="module")
def loaded():
    assert native.load()  # this machine has a compiler (inductor needs it too)


def _reference(x: torch.Tensor, inv_t: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``S = sum exp(d)``, ``T = sum exp(d) d`` in float64, ``d = max(y - max y, D_MIN)`` of the
    tempered row ``y = (x - shift) * inv_t`` (the module's definition)."""
    y = (x.double() - shift.double().unsqueeze(-1)) * inv_t.double().unsqueeze(-1)
    d = (y - y.amax(dim=-1, keepdim=True)).clamp(min=native_stats.D_MIN)
    e = d.exp()
    return e.sum(dim=-1), (e * d).sum(dim=-1)


def _rows(kind: str, batch: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(batch, vocab, generator=g) * 3.0
    if kind == "masked":  # most of every row -inf, one finite logit at least
        x = x.masked_fill(torch.rand(batch, vocab, generator=g) < 0.9, float("-inf"))
        x[:, -1] = torch.randn(batch, generator=g)
    elif kind == "rising":  # the max moves up in every block: the sums are rescaled each time
        x = x + torch.linspace(0.0, 60.0, vocab)
    elif kind == "max_first":
        x[:, 0] = 40.0
    elif kind == "wide":  # most tokens more than 87 nats below the top: clamped (a low EDT temperature)
        x = x * 40.0
    elif kind == "ties":
        x = x.round()
    elif kind == "masked_start":  # whole blocks of -inf before the first finite logit
        x[:, : (2 * vocab) // 3] = float("-inf")
    return x


@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(1, 5),
    vocab=st.integers(1, 3 * 1024 + 2 * CHUNK + 37),
    kind=st.sampled_from(["randn", "masked", "rising", "max_first", "ties", "masked_start", "wide"]),
    temperature=st.floats(0.05, 20.0),
    shifted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_the_float64_definition(loaded, batch, vocab, kind, temperature, shifted, seed):
    g = torch.Generator().manual_seed(seed)
    x = _rows(kind, batch, vocab, g)
    inv_t = torch.full((batch,), temperature).reciprocal()
    inv_t[0] = 1.0  # one untempered row in every batch
    finite_max = x.amax(dim=-1)
    shift = torch.where(torch.rand(batch, generator=g) < 0.5, finite_max, 0.0) if shifted else torch.zeros(batch)
    cmax, sums = native_stats.row_exp_sums(x, inv_t, shift)
    assert torch.equal(cmax, chunk_maxima(x))
    assert torch.equal(sums[:, 0], finite_max)
    s, t = _reference(x, inv_t, shift)
    # every term's d carries the float32 rounding of the tempered logit y: |y| eps relative in exp(d)
    y = (x.double() - shift.double().unsqueeze(-1)) * inv_t.double().unsqueeze(-1)
    rtol = 2e-6 + 2.4e-7 * torch.where(torch.isfinite(y), y.abs(), 0.0).amax(dim=-1)
    assert ((sums[:, 1].double() - s).abs() <= rtol * s).all(), (sums[:, 1], s)
    # T's terms e d: its scale is S * (the largest |d| that counts)
    scale = s * (torch.where(torch.isfinite(y), y.abs(), 0.0).amax(dim=-1) * 2 + 1.0).clamp(max=-native_stats.D_MIN)
    assert ((sums[:, 2].double() - t).abs() <= rtol * scale).all(), (sums[:, 2], t)
    # the same sums in one pass of the exp terms when the raw max is known (EDT on every row)
    at = native_stats.row_exp_sums_at(x, inv_t, shift, sums[:, 0])
    assert torch.equal(at[:, 0], sums[:, 0])
    assert ((at[:, 1].double() - s).abs() <= rtol * s).all() and ((at[:, 2].double() - t).abs() <= rtol * scale).all()
    torch_cmax, torch_sums = native_stats._torch_sums(x, inv_t, shift)
    assert torch.equal(torch_cmax, cmax) and torch.equal(torch_sums[:, 0], sums[:, 0])
    assert ((torch_sums[:, 1:].double() - sums[:, 1:].double()).abs() <= 2 * (rtol * scale).unsqueeze(-1)).all()


def test_a_long_row_sums_as_accurately_as_float32_allows(loaded):
    """150k logits: float32 lanes within a block and float64 across them keep S and T near eps."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 151936, generator=g) * 2.0
    inv_t, shift = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.zeros(4)
    _, sums = native_stats.row_exp_sums(x, inv_t, shift)
    s, t = _reference(x, inv_t, shift)
    assert ((sums[:, 1].double() - s) / s).abs().max() < 2e-6
    assert ((sums[:, 2].double() - t) / t).abs().max() < 2e-6
    h = s.log() - t / s  # and the entropy in nats the programs derive from them
    got = sums[:, 1].double().log() - sums[:, 2].double() / sums[:, 1].double()
    assert (got - h).abs().max() < 1e-5 * math.log(151936)


def test_without_the_library_it_is_the_torch_formulation(monkeypatch):
    monkeypatch.setattr(native_stats, "applies", lambda x: False)
    x = torch.randn(3, 5000)
    inv_t, shift = torch.tensor([1.0, 0.5, 2.0]), torch.zeros(3)
    cmax, sums = native_stats.row_exp_sums(x, inv_t, shift)
    want_cmax, want_sums = native_stats._torch_sums(x, inv_t, shift)
    assert torch.equal(cmax, want_cmax) and torch.equal(sums, want_sums)
    assert torch.equal(native_stats.row_exp_sums_at(x, inv_t, shift, x.amax(dim=-1)), want_sums)
    rows = torch.tensor([2, 0, 2])
    got = native_stats.row_exp_sums(x, inv_t, shift, rows)
    want = native_stats._torch_sums(x[rows], inv_t, shift)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 6),
    vocab=st.integers(1, 2 * 1024 + CHUNK + 11),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=7),
    seed=st.integers(0, 2**16),
)
def test_given_rows_it_reads_those_rows_in_place(loaded, batch, vocab, picks, seed):
    """Row numbers (repeats allowed): the same results, bit for bit, as the kernel on a copy of
    those rows, the copy never made."""
    g = torch.Generator().manual_seed(seed)
    x = _rows("randn", batch, vocab, g)
    rows = torch.tensor([p % batch for p in picks])
    inv_t, shift = torch.rand(len(picks), generator=g) + 0.5, torch.zeros(len(picks))
    cmax, sums = native_stats.row_exp_sums(x, inv_t, shift, rows)
    want_cmax, want_sums = native_stats.row_exp_sums(x[rows].contiguous(), inv_t, shift)
    assert torch.equal(cmax, want_cmax) and torch.equal(sums, want_sums)


def test_a_row_number_out_of_range_is_never_read(loaded):
    """The kernel checks the row numbers before it reads: one out of range falls to the torch
    formulation, whose index check refuses it."""
    x = torch.randn(3, 4096)
    ones = torch.ones(2)
    assert native_stats._kernel(x, ones, torch.zeros(2), None, torch.tensor([0, 3])) is None
    assert native_stats._kernel(x, ones, torch.zeros(2), None, torch.tensor([-1, 0])) is None
    with pytest.raises(IndexError):
        native_stats.row_exp_sums(x, ones, torch.zeros(2), torch.tensor([0, 3]))
