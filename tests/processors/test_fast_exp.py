"""ATen's fast exp in the CPU programs (sample_smart.processors.fast_exp): only the compiles run
inside `compiling()` write it, they are accurate to its documented bound, and their cache
entries never stand in for a usual compile of the same graph (nor the reverse).

``exp(-87.5)`` tells the two apart: 1.1e-38 from Sleef's exp, 0 from the fast one (which flushes
below about -86.6)."""

from __future__ import annotations

import threading

import pytest
import torch

from sample_smart.processors import fast_exp

pytestmark = pytest.mark.skipif(not fast_exp.installed(), reason="this torch's inductor has no known exp writer")

LOW = -87.5  # where the two exps differ in kind


def _probe() -> torch.Tensor:
    return torch.full((64,), LOW)


def _compiled(fn, fast: bool, cache: bool = True):
    options = {**(fast_exp.options() if fast else {}), "fx_graph_cache": cache}
    return torch.compile(fn, fullgraph=True, dynamic=False, options=options)


def test_only_compiles_inside_compiling_write_the_fast_exp():
    usual = _compiled(lambda x: (x * 1.0).exp(), fast=False, cache=False)
    assert usual(_probe()).min() > 0  # Sleef's exp: a normal float above 0

    fast = _compiled(lambda x: (x * 1.0).exp() + 0.0, fast=True, cache=False)
    with fast_exp.compiling():
        assert (fast(_probe()) == 0).all()
        # another thread compiling meanwhile writes the usual exp
        seen = []
        other = _compiled(lambda x: (x * 1.0).exp() * 1.0, fast=False, cache=False)
        worker = threading.Thread(target=lambda: seen.append(other(_probe())))
        worker.start()
        worker.join()
        assert seen and seen[0].min() > 0
    # after the context: the next compile is the usual one
    after = _compiled(lambda x: (x * 1.0).exp() - 0.0, fast=False, cache=False)
    assert after(_probe()).min() > 0


def test_cache_keeps_fast_and_usual_entries_apart():
    """The same graph compiled usual, fast, usual (inductor's on-disk cache on): each gets its own."""
    probe = _probe()

    def f(x):
        return (x + 0.25).exp() - (x - 0.25).exp()

    assert _compiled(lambda x: f(x), fast=False)(probe).abs().max() > 0
    with fast_exp.compiling():
        assert (_compiled(lambda x: f(x), fast=True)(probe) == 0).all()
    assert _compiled(lambda x: f(x), fast=False)(probe).abs().max() > 0


def test_fast_exp_accuracy_and_edges():
    x = torch.cat([torch.linspace(-86.0, 88.0, 400_001), torch.tensor([float("-inf"), float("inf"), -1e30, -200.0])])
    with fast_exp.compiling():
        got = _compiled(lambda t: t.exp(), fast=True, cache=False)(x)
    ref = x[:-4].double().exp()
    rel = ((got[:-4].double() - ref) / ref).abs().max().item()
    assert rel <= 1e-6, rel  # the documented 3.9e-7 on this machine, with room for another ISA
    assert got[-4:].tolist() == [0.0, float("inf"), 0.0, 0.0]
