"""``--shard i/n`` of the commands whose runs split into shards (``eval``, ``trace``).

The rule (which example goes to which shard) is :mod:`sample_smart.shards`; the outputs of the
``n`` shards join with ``sample-smart merge``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sample_smart.shards import Shard


def _parse(ctx: click.Context, param: click.Parameter, value: Any) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def shard_option(command: Callable) -> Callable:
    """Add ``--shard i/n`` (parsed into a :class:`~sample_smart.shards.Shard`, or None)."""
    return click.option(
        "--shard",
        default=None,
        metavar="I/N",
        callback=_parse,
        help="Run only shard I of N (0 <= I < N): the examples whose id hashes to I mod N "
        "(sha256 of the id; --limit applies first). Join the N outputs with `sample-smart merge`.",
    )(command)
