"""The `sample-smart` command line.

Each subcommand group lives in its own module under ``sample_smart.commands`` and is
imported lazily, so ``sample-smart --help`` stays fast and a command that needs vLLM
or transformers imports them only when it runs.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "calibrate": "sample_smart.commands.calibrate:calibrate",
    "analyze": "sample_smart.commands.analyze:analyze",
    "bench": "sample_smart.commands.bench:bench",
    "compare": "sample_smart.commands.compare:compare",
    "decision": "sample_smart.commands.decision:decision",
    "demo": "sample_smart.commands.demo:demo",
    "eval": "sample_smart.commands.eval:eval_command",
    "merge": "sample_smart.commands.merge:merge",
    "model": "sample_smart.commands.model:model",
    "ope": "sample_smart.commands.ope:ope",
    "trace": "sample_smart.commands.trace:trace",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="sample_smart")
def main() -> None:
    """sample_smart: correctness-first decoding (arXiv 2510.05987)."""


if __name__ == "__main__":  # pragma: no cover
    main()
