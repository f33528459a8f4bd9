"""ATen's fast vectorised ``exp`` in the CPU programs that :mod:`~sample_smart.processors.plans`
compiles, instead of Sleef's.

Inductor's C++ backend writes ``exp(v)`` of a vector ``v`` as ``v.exp()``, Sleef's ``expf16_u10``
(1.0 ulp). Every threshold program is bound by its ``exp`` passes (the row statistics of
:mod:`~sample_smart.processors.stats`: ``e_i = exp(x_i - m)``, once more on the untempered rows
for EDT), so our compiles write ``v.exp_u20()`` instead: ATen's own fast exponential (the one its
flash attention uses), ``exp(x) = 2^n * P(r)`` with ``n = floor(x / ln 2 + 1/2)``,
``r = x - n ln 2`` and ``P`` a degree-5 polynomial. Its conventions, where they differ from
``torch.exp`` (measured on this machine's AVX-512 build, float32):

- relative error at most 3.9e-7 (about 7 ulp) for ``-86 <= x <= 88.7``, against 6e-8;
- ``0`` for ``x`` below about ``-86.6`` (where ``torch.exp`` gives values below 1.2e-38 and
  subnormals): a token ``86.6`` nats below a row's top holds less than ``1e-37`` of its mass;
- ``exp(-inf) = 0`` and ``exp(+inf) = +inf`` as usual; ``exp(nan)`` is ``+inf`` (logits with
  NaN are outside every program's contract: :func:`~sample_smart.processors.pipeline.validate_logits`
  refuses them).

The change is scoped. :func:`compiling` marks the compiles this thread runs inside it (only
:func:`~sample_smart.processors.plans.prepare` uses it); any other compile in the process, in this
thread or another, gets inductor's usual code. :func:`options` is given to those ``torch.compile``
calls: a no-op post-grad pass whose ``uuid`` enters inductor's cache key, so a graph compiled
with the fast exp is never loaded from the cache for a compile without it, nor the reverse.
Where inductor's code generator is not where this module expects it (another torch), nothing is
patched and the programs use Sleef's exp (a slower, equally correct program).
"""

from __future__ import annotations

from sample_smart.processors.scoped_patch import ScopedPatch

__all__ = ["compiling", "options", "installed"]

_VERSION = "sample_smart.fast_exp/exp_u20/1"


def _wrap(active) -> bool:
    """Wrap inductor's vectorised ``exp`` writer: ``exp_u20`` while ``active()``."""
    try:
        from torch._inductor.codegen.cpp import CppVecOverrides
    except ImportError:
        return False
    original = CppVecOverrides.__dict__.get("exp")
    if not isinstance(original, staticmethod):
        return False
    usual = original.__func__

    def exp(x):
        return f"{x}.exp_u20()" if active() else usual(x)

    exp.__wrapped__ = usual
    CppVecOverrides.exp = staticmethod(exp)
    return True


_patch = ScopedPatch(_wrap)
installed = _patch.installed  # whether this torch's inductor writes the fast exp inside compiling()
# Inside: the CPU compiles this thread runs write ``exp_u20`` (they must be given options(), which
# keeps their cache entries apart).
compiling = _patch.compiling


_options: list[dict] = []


def options() -> dict:
    """``torch.compile(options=...)`` for a CPU program compiled inside :func:`compiling`: empty
    when the writer could not be wrapped (the usual exp, the usual cache entries)."""
    if not _options:
        _options.append({"post_grad_custom_post_pass": _cache_key_pass()} if installed() else {})
    return dict(_options[0])


def _cache_key_pass():
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class FastExpKey(CustomGraphPass):
        """Changes no graph; its uuid names the exp the compiled code uses."""

        def __call__(self, graph) -> None:
            return None

        def uuid(self) -> str:
            return _VERSION

    return FastExpKey()
