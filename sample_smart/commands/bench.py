"""`sample-smart bench processors|engine`: the benchmarks of ``benchmarks/`` (see benchmarks/README.md).

The benchmarks live in the repository's ``benchmarks`` folder (next to ``sample_smart``), not in
the installed package; these commands run them from a source checkout and pass every option
through (``sample-smart bench processors --help``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

_PASS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def _benchmark(name: str):
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / f"{name}.py").is_file():
        raise click.ClickException(
            f"benchmarks/{name}.py not found next to the sample_smart package ({root}): the benchmarks "
            "run from a source checkout of the repository"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def _run(name: str, args: tuple[str, ...]) -> None:
    module = _benchmark(name)
    try:
        module.main(list(args))
    except SystemExit as exc:  # argparse errors and --help
        if exc.code not in (0, None):
            raise click.exceptions.Exit(exc.code if isinstance(exc.code, int) else 2) from None


@click.group()
def bench() -> None:
    """Benchmarks: the processors against the alternatives, the vLLM engine with them."""


@bench.command("processors", context_settings=_PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def processors(args: tuple[str, ...]) -> None:
    """Time every knob, the paper's decoders and the full chain against the floors, transformers'
    warpers, vLLM's built-ins and a sort-based chain (options: --help)."""
    _run("processors", args)


@bench.command("engine", context_settings=_PASS)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def engine(args: tuple[str, ...]) -> None:
    """Tokens/s of vLLM on the embedded model without, with-but-unused, and with the full chain
    (options: --help)."""
    _run("engine", args)
