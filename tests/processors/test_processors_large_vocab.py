"""Large vocabularies, where the chain takes its fast routes: the two-level selection of each row's
largest logits (``select``), the chunk maxima carried through temperature and EDT, and top-p's
bracketing search with its exact bisection fallback. Each is checked against ``torch.topk`` or the
float64 textbook rules."""

from __future__ import annotations

import pytest
import top_p_rows
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import check_against_reference, make_logits

import sample_smart.processors.top_p as top_p_mod
from sample_smart import DecodeConfig, process
from sample_smart.processors import native_top_p, select
from sample_smart.processors.select import CHUNK, chunk_maxima, largest_values, uses_chunks


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    chunks=st.integers(8, 60),
    tail=st.integers(0, CHUNK - 1),
    k=st.integers(1, 40),
    ties=st.booleans(),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_largest_values_equals_topk(batch, chunks, tail, k, ties, masked, seed):
    vocab = chunks * CHUNK + tail
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g)
    if ties:  # many equal values, some of them among the largest
        x = (x * 2).round() / 2
    if masked:  # -inf padding, as a vocabulary padded to a multiple of 64 has
        x[:, vocab // 2 :] = float("-inf")
    want = torch.topk(x, min(k, vocab), dim=-1).values
    assert torch.equal(chunk_maxima(x).amax(-1), x.amax(-1))
    rows = torch.randperm(batch, generator=g)[: max(1, batch // 2)]  # a subset, in any order
    for sub_rows in (1, 10**9):  # with and without the third level
        select.SUB_ROWS, saved = sub_rows, select.SUB_ROWS
        try:
            assert torch.equal(largest_values(x, k), want)
            assert torch.equal(largest_values(x, k, rows=rows), want[rows])
            assert torch.equal(largest_values(x, k, chunk_maxima(x)[rows], rows), want[rows])
        finally:
            select.SUB_ROWS = saved


def test_largest_values_takes_the_two_level_route_and_finds_the_tail():
    vocab = 200 * CHUNK + 5
    assert uses_chunks(vocab, 40)
    x = torch.randn(3, vocab)
    x[0, -1] = 50.0  # the largest value sits in the partial last chunk
    x[1, :40] = 9.0  # forty tied maxima in one chunk
    assert torch.equal(largest_values(x, 40), torch.topk(x, 40, dim=-1).values)


MIXED = [
    {"top_p": 0.9},
    {"temperature": 0.7, "top_k": 50},
    {"edt_var": [0.8, 1.0, 1.0], "dynamic_top_k": [1, 2, 3, 5, 8, 13, 20, 30, 40, 50]},
    {"edt_var": [2.0, 0.5, 0.7], "top_p": 0.95, "hewitt_epsilon": 1e-3},
    {"temperature": 1.3, "top_p": 0.5, "min_p": 0.01},
    {"top_k": 7, "top_p": 0.99, "prob_threshold": 1e-6},
]


@pytest.mark.parametrize("vocab", [49152, 49152 + 37])
@pytest.mark.parametrize("kind", ["random", "peaked"])
def test_mixed_batch_at_a_real_vocabulary_size_matches_textbook(vocab, kind):
    x64 = make_logits(kind, len(MIXED), vocab, seed=vocab % 97)
    out = process(x64.float(), [DecodeConfig.from_dict(c) for c in MIXED])
    for i, cfg in enumerate(MIXED):
        check_against_reference(x64[i : i + 1], out[i : i + 1], cfg)
    kept = torch.isfinite(out).sum(-1)
    assert kept[0] > top_p_mod.CANDIDATES or kind == "peaked"  # flat rows take the search


def test_top_p_bisection_fallback_is_exact(monkeypatch):
    """The route without the CPU kernel (a device, another dtype, no library)."""
    monkeypatch.setattr(native_top_p, "applies", lambda x: False)
    calls = []
    bisect = top_p_mod._bisect_keys
    monkeypatch.setattr(top_p_mod, "_bisect_keys", lambda *a: calls.append(1) or bisect(*a))
    x64 = torch.stack([top_p_rows.adversarial_row(40000), make_logits("random", 1, 40000, seed=1)[0]])
    for p in (0.5, 0.9):
        calls.clear()
        out = process(x64.float(), DecodeConfig(top_p=p))
        assert calls, "the adversarial row must need the bisection"
        check_against_reference(x64, out, {"top_p": p})


@pytest.mark.parametrize("p", [0.3, 0.7, 0.9])
def test_top_p_with_heavy_ties_matches_textbook(p):
    """Logits of a bfloat16 model: few distinct values, so the bracket can end on a tie group of
    hundreds of tokens, with the exact tau at that value or below it."""
    g = torch.Generator().manual_seed(11)
    flat = (torch.randn(3, 60000, generator=g, dtype=torch.float64) * 2.0).to(torch.bfloat16).double()
    groups = torch.full((60000,), -4.0, dtype=torch.float64)
    groups[:3000] = 2.0  # one tie group carrying part of the mass
    groups[3000:6000] = 1.9 + torch.arange(3000, dtype=torch.float64) * 3e-5  # distinct values just below
    x64 = torch.cat([flat, groups.unsqueeze(0)])
    out = process(x64.float(), DecodeConfig(top_p=p))
    check_against_reference(x64, out, {"top_p": p})


def test_finish_flags_a_tie_group_with_the_crossing_below_it():
    """The finish's shortcut for a bracket of one tied value must not apply when smaller values
    share the bracket: 300 copies of 2.0 and 300 distinct values below, the crossing among those."""
    x = torch.full((1, 20000), -8.0)
    x[0, :300] = 2.0
    x[0, 300:600] = 1.5 + torch.arange(300) * 1e-3
    m = x.amax(-1)
    e = (x - m).exp()
    tie_mass = 300.0
    target = torch.tensor([tie_mass + 100.0])  # needs the tie group and ~100 of the values below
    lo, hi = torch.tensor([1.0]), torch.tensor([3.0])
    tau, exact = top_p_mod._finish(x, m, target, lo, hi, torch.zeros(1))
    if bool(exact):
        above = e[x >= tau].sum()
        assert above >= target and e[x > tau].sum() < target, (float(tau), float(above))
    else:
        assert float(tau) <= 2.0  # flagged: the bisection takes over
    tau, exact = top_p_mod._finish(x, m, torch.tensor([100.0]), lo, hi, torch.zeros(1))
    assert bool(exact) and float(tau) == 2.0  # crossing inside the tie group: the shortcut is exact
