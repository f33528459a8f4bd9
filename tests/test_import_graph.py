"""The package's import graph: no cycle between sample_smart's modules (imports inside functions
count too: they are how a cycle hides), and the core never imports vllm, lm_eval or transformers
when it is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sample_smart"
CORE = (
    "sample_smart",
    "sample_smart.config",
    "sample_smart.processors",
    "sample_smart.calibration",
    "sample_smart.traces",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every sample_smart module ``name`` imports, anywhere in its body (packages left out: an
    ``__init__`` that re-exports is not a dependency of its own submodules)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name and modules[m].name != "__init__.py"}


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycles.append(" -> ".join(stack[stack.index(v) :] + [v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, cycles
    assert graph["sample_smart.processors.dispatch"] >= {
        "sample_smart.processors.chain",
        "sample_smart.processors.compiled",
    }


def test_the_core_imports_no_engine_or_model_library():
    code = (
        "import sys; import " + ", ".join(CORE) + "; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'lm_eval', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
