"""The native top-p threshold (sample_smart.processors.native_top_p): for every shape, temperature,
shift, p and layout (flat rows, ties, -inf padding, a row of one finite token) its tau is the
textbook one, ``max { y_j : M(y_j) >= p s }`` with masses in float64 (a different token only where
both masses lie within float rounding of ``p s``); combined with the other rules' tau as the search
program combines it; the rows written as the write program writes them, and no other row; row
numbers out of range refused before anything is read. That the programs and the eager chain take
it: tests/processors/test_plans.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sample_smart.processors import native, native_stats, native_top_p

NEG = float("-inf")


@pytest.fixture(scope="module")
def loaded():
    assert native.load()  # this machine has a compiler (inductor needs it too)


def _tempered(x, inv_t, shift):
    return (x - shift.unsqueeze(-1)) * inv_t.unsqueeze(-1)  # float32: the kernel's operations


def _inputs(x: torch.Tensor, rows: torch.Tensor, temperature: float, shift: float, p: float):
    """The kernel's per-row arguments for ``x[rows]``: inv_t, shift, m, s (float32 as the threshold
    program has them), p and tau_in = -inf."""
    r = rows.shape[0]
    inv_t = torch.full((r,), 1.0 / temperature, dtype=torch.float32)
    sh = torch.full((r,), shift, dtype=torch.float32)
    y = _tempered(x[rows], inv_t, sh)
    m = y.amax(dim=-1)
    s = torch.where(torch.isinf(y), 0.0, (y - m.unsqueeze(-1)).exp()).sum(dim=-1)
    return inv_t, sh, m, s, torch.full((r,), p), torch.full((r,), NEG)


def _mass_at(y: torch.Tensor, m: float, t: float) -> float:
    """M(t) = sum_{y_i >= t} exp(y_i - m) in float64 (the kernel's terms are within 4e-7 of these)."""
    yd = y.double()
    e = torch.where(torch.isinf(yd), 0.0, (yd - m).clamp(min=native_stats.D_MIN).exp())
    return float(e[yd >= t].sum())


def _textbook_tau(y: torch.Tensor, m: float, target: float) -> float:
    """Sort descending, running mass with ties taken together: the largest value whose mass reaches
    target (the smallest finite value when rounding leaves the total short)."""
    finite = y[torch.isfinite(y)].double()
    values = torch.unique(finite).flip(0)  # distinct, descending
    for v in values.tolist():
        if _mass_at(y, m, v) >= target:
            return v
    return values[-1].item()


def _rows(kind: str, batch: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(batch, vocab, generator=g)
    if kind == "flat":
        x = x * 0.3
    elif kind == "peaked":
        x = x * 4.0
    elif kind == "ties":  # bfloat16-like logits: few distinct values
        x = (x * 2.0).to(torch.bfloat16).float()
    elif kind == "padded":  # -inf padding (a masked vocabulary), one finite token at least
        x = x.masked_fill(torch.rand(batch, vocab, generator=g) < 0.5, NEG)
        x[:, 0] = 1.0
    elif kind == "one_token":
        x = torch.full((batch, vocab), NEG)
        x[:, vocab // 2] = 3.0
    return x


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    vocab=st.integers(1, 5000),
    kind=st.sampled_from(["flat", "peaked", "ties", "padded", "one_token"]),
    temperature=st.floats(0.1, 5.0),
    shift=st.sampled_from([0.0, 0.7]),
    p=st.floats(0.01, 0.999),
    seed=st.integers(0, 2**16),
)
def test_tau_is_the_textbook_crossing(loaded, batch, vocab, kind, temperature, shift, p, seed):
    g = torch.Generator().manual_seed(seed)
    x = _rows(kind, batch + 1, vocab, g)
    rows = torch.arange(1, batch + 1)  # the first row is never read
    args = _inputs(x, rows, temperature, shift, p)
    tau = native_top_p.top_p_rows(x, rows, *args)
    assert tau is not None and tau.shape == (batch,)
    inv_t, sh, m, s = args[:4]
    for r in range(batch):
        y = _tempered(x[rows[r]].unsqueeze(0), inv_t[r : r + 1], sh[r : r + 1])[0]
        target = float(torch.tensor(p, dtype=torch.float32) * s[r])
        got, want = float(tau[r]), _textbook_tau(y, float(m[r]), target)
        assert got in set(y[torch.isfinite(y)].tolist())  # a value of the row, so the write keeps it
        if got != want:  # only where the crossing is within float rounding of the target
            for v in (got, want):
                assert abs(_mass_at(y, float(m[r]), v) - target) <= 1e-5 * target, (got, want, target)


def test_tau_combines_with_the_other_rules_as_the_search_does(loaded):
    """tau_out = max(tau_in, min(tau, m)): a larger tau_in wins, -inf leaves the row's own."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3000, generator=g) * 0.5
    rows = torch.arange(3)
    inv_t, sh, m, s, p, none = _inputs(x, rows, 1.0, 0.0, 0.9)
    own = native_top_p.top_p_rows(x, rows, inv_t, sh, m, s, p, none)
    tau_in = torch.tensor([NEG, float(own[1]) + 0.25, float(m[2]) + 1.0])
    got = native_top_p.top_p_rows(x, rows, inv_t, sh, m, s, p, tau_in)
    assert torch.equal(got, torch.maximum(tau_in, torch.minimum(own, m)))


def test_write_keeps_the_rows_tempered_values_at_or_above_tau_and_no_other_row(loaded):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5, 4099, generator=g) * 0.5
    rows = torch.tensor([3, 1])
    args = _inputs(x, rows, 0.7, 0.4, 0.8)
    tau = native_top_p.top_p_rows(x, rows, *args)
    written = x.clone()
    assert torch.equal(native_top_p.top_p_rows(written, rows, *args, write=True), tau)
    y = _tempered(x[rows], args[0], args[1])
    want = torch.where(y >= tau.unsqueeze(-1), y, NEG)
    assert torch.equal(written[rows], want)
    others = torch.tensor([0, 2, 4])
    assert torch.equal(written[others], x[others])
    assert 0 < int(torch.isfinite(want).sum()) < want.numel()


@pytest.mark.parametrize("bad", [-1, 5, 2**40])
def test_row_numbers_out_of_range_are_refused_before_anything_is_read(loaded, bad):
    x = torch.randn(5, 300)
    before = x.clone()
    rows = torch.tensor([0, bad])
    args = _inputs(x, torch.tensor([0, 0]), 1.0, 0.0, 0.9)
    assert native_top_p.top_p_rows(x, rows, *args, write=True) is None
    assert torch.equal(x, before)


def test_per_row_arguments_of_another_length_are_refused(loaded):
    x = torch.randn(4, 300)
    args = list(_inputs(x, torch.arange(2), 1.0, 0.0, 0.9))
    args[4] = torch.full((3,), 0.9)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        native_top_p.top_p_rows(x, torch.arange(2), *args)


def test_does_not_apply_off_float32_or_to_a_strided_view(loaded):
    x = torch.randn(4, 300)
    assert native_top_p.applies(x)
    assert not native_top_p.applies(x.double())
    assert not native_top_p.applies(x[:, ::2])
    args = _inputs(x, torch.arange(2), 1.0, 0.0, 0.9)
    assert native_top_p.top_p_rows(x.double(), torch.arange(2), *args) is None
