"""The engine flags of every command that starts a vLLM engine (one decorator, one reader).

Use in a command (this is all a new engine-starting command needs)::

    from sample_smart.commands.engine_flags import engine_options, engine_overrides_of

    @click.command()
    @engine_options
    def run(**params):
        overrides = engine_overrides_of(params)        # checked; click error, exit 2, when bad
        llm = make_llm(model, **overrides, **what_the_command_sets_itself)

``engine_options`` adds one click option per row of
:data:`sample_smart.integrations.engine_args.ENGINE_FLAGS` (typed and range-checked as the
command line is parsed) and the repeatable ``--engine-arg KEY=VALUE`` for any other field of
vLLM's ``EngineArgs``. ``engine_overrides_of(params)`` checks the generic keys against vLLM's
``EngineArgs`` (importing vLLM only when one is given) and returns the overrides for
``make_llm``; with no engine flag it returns ``{}`` (make_llm's CPU defaults). A command whose
own flag sets an ``EngineArgs`` field passes ``own={"max_model_len": "--max-model-len"}`` so that
``--engine-arg max_model_len=...`` is refused with a pointer to that flag. A command whose
function takes named parameters adds ``**engine`` to its signature and calls
``engine_overrides_of(engine)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from sample_smart.integrations.engine_args import ENGINE_FLAGS, EngineFlag, engine_overrides

ENGINE_ARG_PARAM = "engine_args"
ENGINE_PARAMS = tuple(f.key for f in ENGINE_FLAGS) + (ENGINE_ARG_PARAM,)


def _click_type(spec: EngineFlag) -> Any:
    if spec.kind == "int":
        return click.IntRange(min=spec.minimum, max=spec.maximum)
    if spec.kind == "float":
        return click.FloatRange(min=spec.minimum, max=spec.maximum, min_open=spec.min_open)
    if spec.kind == "choice":
        return click.Choice(list(spec.choices))
    return str


def engine_options(command: Callable) -> Callable:
    """Add the named engine flags and ``--engine-arg`` to a click command (see the module doc)."""
    command = click.option(
        "--engine-arg",
        ENGINE_ARG_PARAM,
        multiple=True,
        metavar="KEY=VALUE",
        help="Any other vllm EngineArgs field (repeatable; VALUE parsed as JSON where it parses, else a "
        "string), e.g. --engine-arg enable_prefix_caching=false --engine-arg cpu_offload_gb=4. Checked against "
        "vLLM's EngineArgs before the engine starts.",
    )(command)
    for spec in reversed(ENGINE_FLAGS):
        command = click.option(
            spec.flag,
            spec.key,
            type=_click_type(spec),
            default=None,
            help=f"vLLM engine: {spec.help} Allowed: {spec.allowed} [default: vLLM's, or make_llm's on CPU].",
        )(command)
    return command


def engine_overrides_of(params: Mapping[str, Any], own: Mapping[str, str] = {}) -> dict[str, Any]:
    """The checked ``make_llm`` overrides of a command's engine flags (``params``: the command's
    keyword arguments; other keys are ignored). click.BadParameter naming the flag otherwise."""
    named = {f.key: params.get(f.key) for f in ENGINE_FLAGS}
    try:
        return engine_overrides(named, params.get(ENGINE_ARG_PARAM) or (), own=own)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None  # the message names the flag or key
