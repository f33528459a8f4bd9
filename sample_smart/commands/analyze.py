"""`sample-smart analyze ...`: the confidence-versus-correctness studies over eval runs.

Each subcommand writes ``<name>.json`` (the study, with its definitions and bin edges) and
``<name>.png`` into ``--output-dir`` (default: beside the input) and prints the JSON path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

_SAMPLES = click.argument("samples", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_TRACES = click.option("--traces", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                       help="Generation traces [default: <stem>_traces.jsonl beside the samples].")
_OUT = click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
                    help="Where the JSON and PNG go [default: the folder of the input].")
_THRESHOLD = click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
                          show_default=True, help="A token is low-confidence when its raw p_max is below this.")


def _write(study: dict[str, Any], out_dir: Path, name: str, plot: Callable[[dict, Path], Path]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(study, indent=2))
    plot(study, out_dir / f"{name}.png")
    click.echo(str(json_path))
    return json_path


def _joined(samples: Path, traces: Path | None) -> list[dict[str, Any]]:
    from sample_smart.analysis.studies import join_traces, load_samples, traces_path_for

    try:
        return join_traces(load_samples(samples), traces or traces_path_for(samples))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


def _stem(samples: Path) -> str:
    return samples.name.removesuffix("_samples.jsonl")


@click.group()
def analyze() -> None:
    """Relate per-token confidence (raw p_max, ranks) to final correctness."""


@analyze.command("low-conf")
@_SAMPLES
@_TRACES
@_OUT
@_THRESHOLD
def low_conf(samples: Path, traces: Path | None, output_dir: Path | None, threshold: float) -> None:
    """Accuracy versus the number of low-confidence tokens in the answer."""
    from sample_smart.analysis.plots import plot_low_confidence
    from sample_smart.analysis.studies import low_confidence_study

    study = low_confidence_study(_joined(samples, traces), threshold)
    _write(study, output_dir or samples.parent, f"{_stem(samples)}_low_conf", plot_low_confidence)


@analyze.command("mean-rank")
@_SAMPLES
@_TRACES
@_OUT
def mean_rank(samples: Path, traces: Path | None, output_dir: Path | None) -> None:
    """Accuracy by the mean rank of the sampled tokens (binned)."""
    from sample_smart.analysis.plots import plot_mean_rank
    from sample_smart.analysis.studies import mean_rank_study

    _write(mean_rank_study(_joined(samples, traces)), output_dir or samples.parent,
           f"{_stem(samples)}_mean_rank", plot_mean_rank)


@analyze.command("conf-vote")
@_SAMPLES
@_TRACES
@_OUT
@_THRESHOLD
def conf_vote(samples: Path, traces: Path | None, output_dir: Path | None, threshold: float) -> None:
    """Majority vote conditioned on confidence (filtered and logprob-weighted votes)."""
    from sample_smart.analysis.plots import plot_confidence_vote
    from sample_smart.analysis.studies import confidence_vote_study

    _write(confidence_vote_study(_joined(samples, traces), threshold), output_dir or samples.parent,
           f"{_stem(samples)}_conf_vote", plot_confidence_vote)


@analyze.command("all")
@_SAMPLES
@_TRACES
@_OUT
@_THRESHOLD
@click.pass_context
def all_studies(ctx: click.Context, samples: Path, traces: Path | None, output_dir: Path | None, threshold: float) -> None:
    """The three trace-joined studies of one run."""
    ctx.invoke(low_conf, samples=samples, traces=traces, output_dir=output_dir, threshold=threshold)
    ctx.invoke(mean_rank, samples=samples, traces=traces, output_dir=output_dir)
    ctx.invoke(conf_vote, samples=samples, traces=traces, output_dir=output_dir, threshold=threshold)


@analyze.command("bins")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True)
def bins(metrics: tuple[Path, ...], output_dir: Path) -> None:
    """maj@k versus k for runs restricted to one confidence bin each (the ten-curve figure).

    METRICS are the *_metrics.json of `sample-smart eval --confidence-bin-only b --repeats K` runs.
    """
    from sample_smart.analysis.plots import plot_bin_curves
    from sample_smart.analysis.studies import bin_curves_study

    try:
        study = bin_curves_study(metrics)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    _write(study, output_dir, "confidence_bin_curves", plot_bin_curves)


@analyze.command("table")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--k", type=int, default=None, help="k of maj@k and pass@k [default: the runs' repeats].")
def table(metrics: tuple[Path, ...], k: int | None) -> None:
    """The accuracy table of `sample-smart eval` runs from their *_metrics.json files."""
    from sample_smart.commands.eval import _table

    rows = [json.loads(p.read_text()) for p in metrics]
    k = k or min(r["metrics"]["repeats"] for r in rows)
    if any(str(k) not in r["metrics"]["maj_at_k"] for r in rows):
        raise click.BadParameter(f"k={k} exceeds the repeats of some run", param_hint="'--k'")
    click.echo(_table(rows, k))
