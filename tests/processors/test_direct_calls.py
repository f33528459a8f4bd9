"""Calling a compiled region's one graph without torch.compile's wrapper
(sample_smart.processors.direct_calls): the bytecode is found only where it is unambiguous, gives
the region's outputs, and a call whose sizes the graph was not made for is told apart."""

from __future__ import annotations

import torch

from sample_smart.processors.direct_calls import Shapes, bytecode_of


def _program(x: torch.Tensor, scale: torch.Tensor, extra=None):
    """A small program of the plans' kind: row statistics and a row-wise threshold write."""
    m = x.amax(dim=-1, keepdim=True)
    s = (x - m).exp().sum(dim=-1)
    out = torch.where(x >= m - scale.unsqueeze(-1), x, float("-inf"))
    return out, s, extra


def _region(fn):
    return torch.compile(fn, fullgraph=True, dynamic=None, isolate_recompiles=True)


def test_the_bytecode_of_a_one_graph_region_gives_its_outputs():
    region = _region(_program)
    g = torch.Generator().manual_seed(0)
    x, scale = torch.randn(5, 300, generator=g), torch.rand(5, generator=g) * 3
    torch._dynamo.maybe_mark_dynamic(x, 0)
    torch._dynamo.maybe_mark_dynamic(scale, 0)
    want = region(x, scale)
    direct = bytecode_of(_program, region)
    assert direct is not None and direct.__code__ is not _program.__code__
    assert any(name.startswith("__compiled_fn") for name in direct.__code__.co_names)  # it calls the graph
    for rows in (5, 7, 2):  # the batch dimension is dynamic: one graph serves every size >= 2
        xr, sr = torch.randn(rows, 300, generator=g), torch.rand(rows, generator=g) * 3
        got, want = direct(xr, sr), _program(xr, sr)
        assert torch.equal(got[0], want[0]) and torch.allclose(got[1], want[1]) and got[2] is None
    out, s, extra = direct(x, scale, extra="kept")  # non-tensor arguments and defaults pass through
    assert extra == "kept" and torch.equal(out, _program(x, scale)[0])


def test_a_region_with_two_graphs_or_none_has_no_bytecode():
    region = _region(_program)
    assert bytecode_of(_program, region) is None  # nothing compiled yet
    region(torch.randn(3, 50), torch.rand(3))
    region(torch.randn(3, 50, dtype=torch.float64), torch.rand(3, dtype=torch.float64))  # a second graph
    assert bytecode_of(_program, region) is None
    assert bytecode_of(_program, object()) is None  # not a compiled region


def test_shapes_take_sizes_seen_more_than_once_as_dynamic_and_at_least_two():
    shapes = Shapes()
    assert shapes.spec() is None and not shapes.fit([torch.empty(3, 8)])  # nothing prepared
    shapes.note([torch.empty(3, 8), torch.empty(3), torch.empty(3, 1), torch.empty(())])
    shapes.note([torch.empty(6, 8), torch.empty(6), torch.empty(6, 1), torch.empty(())])
    assert shapes.spec() == ((None, 8), (None,), (None, 1), ())
    ok = [torch.empty(4, 8), torch.empty(4), torch.empty(4, 1), torch.empty(())]
    assert shapes.fit(ok)
    refused = [
        [torch.empty(1, 8), torch.empty(1), torch.empty(1, 1), torch.empty(())],  # 1: specialised
        [torch.empty(0, 8), torch.empty(0), torch.empty(0, 1), torch.empty(())],  # 0: specialised
        [torch.empty(4, 9), torch.empty(4), torch.empty(4, 1), torch.empty(())],  # a static size
        [torch.empty(4, 8), torch.empty(4), torch.empty(4, 2), torch.empty(())],  # a static 1
        [torch.empty(4, 8), torch.empty(4, 1), torch.empty(4, 1), torch.empty(())],  # another rank
        ok[:3],  # another number of tensors
    ]
    for tensors in refused:
        assert not shapes.fit(tensors)


def test_shapes_that_disagree_on_the_arguments_never_fit():
    shapes = Shapes()
    shapes.note([torch.empty(3, 8)])
    shapes.note([torch.empty(3, 8), torch.empty(3)])
    assert shapes.bad and shapes.spec() is None and not shapes.fit([torch.empty(3, 8)])


def test_the_bytecode_keeps_working_when_dynamo_drops_its_globals():
    """The bytecode runs with its own copy of the module's globals: the compiled graph it names
    stays reachable when dynamo removes the global it installed (as its cache clean-up does)."""
    region = _region(_program)
    x, scale = torch.randn(3, 64), torch.rand(3)
    torch._dynamo.maybe_mark_dynamic(x, 0)
    torch._dynamo.maybe_mark_dynamic(scale, 0)
    region(x, scale)
    direct = bytecode_of(_program, region)
    installed = [name for name in direct.__globals__ if name.startswith("__compiled_fn")]
    assert installed
    saved = {name: globals().pop(name) for name in installed if name in globals()}
    try:
        got = direct(x, scale)
    finally:
        globals().update(saved)
    assert torch.equal(got[0], _program(x, scale)[0])
