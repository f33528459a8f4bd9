"""The native candidate selection (sample_smart.processors.native_select): the same values as
``torch.topk`` for every shape, k, subset of rows, ties, ``-inf`` and NaN; refuses what it does
not handle (the caller then uses topk); a failed build leaves topk in place with one warning."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sample_smart.processors import native as native_library
from sample_smart.processors import native_select, select
from sample_smart.processors.select import CHUNK, chunk_maxima


@pytest.fixture(scope="module")
def native():
    assert native_select.load()  # this machine has a compiler (inductor needs it too)
    return native_select


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    nan = torch.finfo(torch.float32).max  # NaN == NaN for the comparison, as topk places them
    return got is not None and torch.equal(got.nan_to_num(nan), want.nan_to_num(nan))


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 6),
    vocab=st.integers(1, 4 * CHUNK + 70),
    k_frac=st.floats(0.0, 1.0),
    kind=st.sampled_from(["randn", "ties", "masked", "nan", "all_masked", "inf"]),
    subset=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_equals_topk(native, batch, vocab, k_frac, kind, subset, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g)
    if kind == "ties":
        x = (x * 2).round() / 2
    elif kind == "masked":
        x[:, torch.rand(vocab, generator=g) < 0.6] = float("-inf")
    elif kind == "nan":
        x[0, int(torch.randint(0, vocab, (), generator=g))] = float("nan")
    elif kind == "all_masked":
        x[:] = float("-inf")
    elif kind == "inf":
        x[-1, :: max(1, vocab // 3)] = float("inf")
    k = max(1, round(k_frac * vocab))
    rows = torch.randint(0, batch, (int(torch.randint(0, 2 * batch + 1, (), generator=g)),), generator=g)
    rows = rows if subset else None
    cmax = chunk_maxima(x)
    got = native.largest_values(x, k, cmax if rows is None else cmax[rows], CHUNK, rows)
    want = torch.topk(x if rows is None else x[rows], k, dim=-1).values
    assert got.shape == want.shape and _same(got, want)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 5),
    vocab=st.integers(2, 6 * CHUNK + 9),
    seed=st.integers(0, 2**16),
    subset=st.booleans(),
)
def test_each_row_selects_its_own_k_and_the_rest_is_minus_inf(native, batch, vocab, seed, subset):
    """One call, a k per row: row r's first ks[r] values are topk's, the rest of its row -inf."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, vocab, generator=g) * 2).round() / 2  # ties too
    rows = torch.randint(0, batch, (batch + 1,), generator=g) if subset else None
    n = batch if rows is None else rows.numel()
    ks = torch.randint(1, vocab + 1, (n,), generator=g)
    k = int(ks.max())
    cmax = chunk_maxima(x)
    got = native.largest_values(x, k, cmax if rows is None else cmax[rows], CHUNK, rows, ks)
    picked = x if rows is None else x[rows]
    assert got.shape == (n, k)
    for r in range(n):
        own = int(ks[r])
        assert torch.equal(got[r, :own], torch.topk(picked[r], own).values)
        assert torch.all(got[r, own:] == float("-inf"))


def test_refuses_what_it_does_not_handle(native):
    x = torch.randn(4, 3 * CHUNK + 5)
    cmax = chunk_maxima(x)
    assert native.largest_values(x, 7, cmax, CHUNK) is not None
    refused = {
        "bfloat16": (x.bfloat16(), 7, cmax, CHUNK, None),
        "strided": (torch.randn(x.shape[1], 4).T, 7, cmax, CHUNK, None),
        "k = 0": (x, 0, cmax, CHUNK, None),
        "k > V": (x, x.shape[1] + 1, cmax, CHUNK, None),
        "other chunk width": (x, 7, cmax, CHUNK // 2, None),
        "maxima of other rows": (x, 7, cmax[:2], CHUNK, None),
        "a row out of range": (x, 7, cmax[:1], CHUNK, torch.tensor([4])),
        "a negative row": (x, 7, cmax[:1], CHUNK, torch.tensor([-1])),
        "int32 rows": (x, 7, cmax[:1], CHUNK, torch.tensor([1], dtype=torch.int32)),
        "a row's k of 0": (x, 7, cmax, CHUNK, None, torch.tensor([1, 0, 7, 7])),
        "a row's k above k": (x, 7, cmax, CHUNK, None, torch.tensor([1, 8, 7, 7])),
        "a k for each of fewer rows": (x, 7, cmax, CHUNK, None, torch.tensor([1, 2])),
        "int32 ks": (x, 7, cmax, CHUNK, None, torch.tensor([1, 2, 3, 4], dtype=torch.int32)),
    }
    for name, args in refused.items():
        assert native.largest_values(*args) is None, name


def test_largest_values_routes_to_it_with_known_maxima_and_to_topk_without(native, monkeypatch):
    x = torch.randn(5, 200 * CHUNK + 3)
    cmax, rows = chunk_maxima(x), torch.tensor([3, 0, 3])
    want = torch.topk(x, 50, dim=-1).values
    calls = []
    real = native_select.largest_values
    monkeypatch.setattr(native_select, "largest_values", lambda *a: calls.append(a[1]) or real(*a))
    assert torch.equal(select.largest_values(x, 50, cmax), want)
    assert torch.equal(select.largest_values(x, 50, cmax[rows], rows), want[rows])
    assert calls == [50, 50]
    assert torch.equal(select.largest_values(x, 50), want) and calls == [50, 50]  # maxima unknown: topk
    monkeypatch.setattr(native_select, "available", lambda: False)
    monkeypatch.setattr(native_select, "largest_values", real)
    assert torch.equal(select.largest_values(x, 50, cmax[rows], rows), want[rows])  # not loaded: topk


def test_a_failed_build_keeps_topk_with_one_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native_library, "_lib", [])
    monkeypatch.setattr(native_library, "_library_path", lambda: tmp_path / "native" / "kernels.so")
    monkeypatch.setattr(native_library, "_compiler", lambda: str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger=native_library.__name__):
        assert not native_select.load() and not native_select.load()
    assert len([r for r in caplog.records if "native kernels" in r.getMessage()]) == 1
    assert not native_select.available()
    x = torch.randn(3, 100 * CHUNK)
    assert native_select.largest_values(x, 5, chunk_maxima(x), CHUNK) is None
    assert torch.equal(select.largest_values(x, 5, chunk_maxima(x)), torch.topk(x, 5, dim=-1).values)
    assert not (tmp_path / "native" / "kernels.so").exists()  # nothing partial left behind


def test_maxima_that_are_not_the_rows_maxima_still_give_the_k_largest(native):
    """A caller's bug (maxima of other values) must not read past the collected values: the row is
    then selected the exact way."""
    x = torch.randn(3, 40 * CHUNK)
    too_high = chunk_maxima(x) + 100.0  # no logit reaches them: nothing would be collected
    got = native.largest_values(x, 20, too_high, CHUNK)
    assert torch.equal(got, torch.topk(x, 20, dim=-1).values)


def test_a_damaged_library_in_the_cache_is_built_again(monkeypatch, tmp_path):
    path = tmp_path / "native" / "kernels.so"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    monkeypatch.setattr(native_library, "_lib", [])
    monkeypatch.setattr(native_library, "_library_path", lambda: path)
    assert native_select.load()
    x = torch.randn(3, 40 * CHUNK)
    assert torch.equal(native_select.largest_values(x, 9, chunk_maxima(x), CHUNK), torch.topk(x, 9, dim=-1).values)
