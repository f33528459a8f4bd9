"""`sample-smart analyze ...`: the confidence-versus-correctness studies over eval runs.

Each subcommand writes ``<name>.json`` (the study, with its definitions and bin edges) and
``<name>.png`` into ``--output-dir`` (default: beside the input) and prints the JSON path;
an output that would replace one of the inputs is refused. A bad input file is reported
as one line ``path:line: what is wrong`` (exit status 2, no traceback): a samples line must
be a JSON object whose ``correct`` is a JSON boolean (or 0/1), a metrics file must hold the
fields the command reads with their types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from sample_smart.io_checks import cli_errors, refuse_overwrite

_SAMPLES = click.argument("samples", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_TRACES = click.option(
    "--traces",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Generation traces [default: <stem>_traces.jsonl beside the samples].",
)
_OUT = click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the JSON and PNG go [default: the folder of the input].",
)
_THRESHOLD = click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="A token is low-confidence when its raw p_max is below this.",
)


def _write(
    study: dict[str, Any], out_dir: Path, name: str, plot: Callable[[dict, Path], Path], inputs: tuple[Path | None, ...]
) -> Path:
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    for path in (json_path, png_path):
        refuse_overwrite(path, inputs, option="--output-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(study, indent=2))
    plot(study, png_path)
    click.echo(str(json_path))
    return json_path


def _traces(samples: Path, traces: Path | None) -> Path:
    from sample_smart.analysis.studies import traces_path_for

    return traces or traces_path_for(samples)


def _joined(samples: Path, traces: Path | None, require: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    from sample_smart.analysis.studies import TRACE_JOIN_FIELDS, join_traces, load_samples

    return join_traces(load_samples(samples, require or TRACE_JOIN_FIELDS), _traces(samples, traces))


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
@cli_errors
def low_conf(samples: Path, traces: Path | None, output_dir: Path | None, threshold: float) -> None:
    """Accuracy versus the number of low-confidence tokens in the answer."""
    from sample_smart.analysis.plots import plot_low_confidence
    from sample_smart.analysis.studies import low_confidence_study

    study = low_confidence_study(_joined(samples, traces), threshold)
    _write(
        study,
        output_dir or samples.parent,
        f"{_stem(samples)}_low_conf",
        plot_low_confidence,
        (samples, _traces(samples, traces)),
    )


@analyze.command("mean-rank")
@_SAMPLES
@_TRACES
@_OUT
@cli_errors
def mean_rank(samples: Path, traces: Path | None, output_dir: Path | None) -> None:
    """Accuracy by the mean rank of the sampled tokens (binned)."""
    from sample_smart.analysis.plots import plot_mean_rank
    from sample_smart.analysis.studies import mean_rank_study

    _write(
        mean_rank_study(_joined(samples, traces)),
        output_dir or samples.parent,
        f"{_stem(samples)}_mean_rank",
        plot_mean_rank,
        (samples, _traces(samples, traces)),
    )


@analyze.command("conf-vote")
@_SAMPLES
@_TRACES
@_OUT
@_THRESHOLD
@cli_errors
def conf_vote(samples: Path, traces: Path | None, output_dir: Path | None, threshold: float) -> None:
    """Majority vote conditioned on confidence (filtered and logprob-weighted votes)."""
    from sample_smart.analysis.plots import plot_confidence_vote
    from sample_smart.analysis.studies import VOTE_FIELDS, confidence_vote_study

    _write(
        confidence_vote_study(_joined(samples, traces, VOTE_FIELDS), threshold),
        output_dir or samples.parent,
        f"{_stem(samples)}_conf_vote",
        plot_confidence_vote,
        (samples, _traces(samples, traces)),
    )


@analyze.command("all")
@_SAMPLES
@_TRACES
@_OUT
@_THRESHOLD
@click.pass_context
def all_studies(
    ctx: click.Context, samples: Path, traces: Path | None, output_dir: Path | None, threshold: float
) -> None:
    """The three trace-joined studies of one run."""
    ctx.invoke(low_conf, samples=samples, traces=traces, output_dir=output_dir, threshold=threshold)
    ctx.invoke(mean_rank, samples=samples, traces=traces, output_dir=output_dir)
    ctx.invoke(conf_vote, samples=samples, traces=traces, output_dir=output_dir, threshold=threshold)


@analyze.command("bins")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True
)
@cli_errors
def bins(metrics: tuple[Path, ...], output_dir: Path) -> None:
    """maj@k versus k for runs restricted to one confidence bin each (the ten-curve figure).

    METRICS are the *_metrics.json of `sample-smart eval --confidence-bin-only b --repeats K` runs.
    """
    from sample_smart.analysis.plots import plot_bin_curves
    from sample_smart.analysis.studies import bin_curves_study

    _write(bin_curves_study(metrics), output_dir, "confidence_bin_curves", plot_bin_curves, metrics)


@analyze.command("table")
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--k", type=int, default=None, help="k of maj@k and pass@k [default: the runs' repeats].")
@cli_errors
def table(metrics: tuple[Path, ...], k: int | None) -> None:
    """The accuracy table of `sample-smart eval` runs from their *_metrics.json files."""
    from sample_smart.analysis.studies import TABLE_FIELDS, load_metrics
    from sample_smart.commands.eval import results_table

    rows = [load_metrics(p, TABLE_FIELDS) for p in metrics]
    k = k or min(r["metrics"]["repeats"] for r in rows)
    for p, r in zip(metrics, rows):
        if str(k) not in r["metrics"]["maj_at_k"] or str(k) not in r["metrics"]["pass_at_k"]:
            raise click.BadParameter(
                f"k={k}: {p} has no maj@{k} or pass@{k} (its repeats: {r['metrics']['repeats']})", param_hint="'--k'"
            )
    click.echo(results_table(rows, k))
