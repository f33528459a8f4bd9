"""g++ -O2 for the CPU programs (sample_smart.processors.opt_level): only the compiles run inside
`compiling()` build their kernels with it; every other compile, also one in another thread
meanwhile, keeps inductor's -O3, and the two builds of the same code are apart in the cache."""

from __future__ import annotations

import threading

import pytest
import torch

from sample_smart.processors import opt_level

pytestmark = pytest.mark.skipif(not opt_level.installed(), reason="this torch's inductor has no known flag function")


@pytest.fixture
def commands(monkeypatch):
    """The command lines of the C++ builds inductor sets up while the test runs, by thread."""
    from torch._inductor import cpp_builder

    seen: list[tuple[str, str]] = []
    init = cpp_builder.CppBuilder.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append((threading.current_thread().name, self.get_command_line()))

    monkeypatch.setattr(cpp_builder.CppBuilder, "__init__", spy)
    return seen


def _compile_and_run(offset: float) -> torch.Tensor:
    """A new graph each time (``offset`` is a constant in it), not read from the cache."""
    fn = torch.compile(
        lambda x: (x * x + offset).sum(-1), fullgraph=True, dynamic=False, options={"fx_graph_cache": False}
    )
    return fn(torch.arange(64.0).reshape(4, 16))


def _levels(commands, thread: str) -> set[str]:
    return {flag for name, line in commands if name == thread for flag in line.split() if flag in ("-O2", "-O3")}


def test_only_compiles_inside_compiling_build_with_o2(commands):
    expected = (torch.arange(64.0).reshape(4, 16) ** 2).sum(-1) + 0.5
    me = threading.current_thread().name
    with opt_level.compiling():
        torch.testing.assert_close(_compile_and_run(0.5 / 16), expected)
        assert _levels(commands, me) == {"-O2"}
        worker = threading.Thread(target=_compile_and_run, args=(0.25,), name="other-compile")
        worker.start()
        worker.join()
        assert _levels(commands, "other-compile") == {"-O3"}
    commands.clear()
    _compile_and_run(0.125)
    assert _levels(commands, me) == {"-O3"}


def test_flag_function_is_usual_outside_and_o2_inside():
    from torch._inductor import cpp_builder

    usual = cpp_builder._get_optimization_cflags.__wrapped__("g++")
    assert cpp_builder._get_optimization_cflags("g++") == usual
    with opt_level.compiling():
        inside = cpp_builder._get_optimization_cflags("g++")
    assert "O3" in usual[0] and "O3" not in inside[0] and opt_level.LEVEL in inside[0]
    assert [f for f in inside[0] if f != opt_level.LEVEL] == [f for f in usual[0] if f != "O3"]
