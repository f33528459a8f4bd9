"""`sample-smart calibrate ...`: grids, power-law fits, 100-bucket calibration and their plots.

    sample-smart calibrate grid TRACES... -o grid.json [--max-rank 20]
    sample-smart calibrate fit grid.json -o calib.json [--base e|10] [--weighted]
    sample-smart calibrate buckets PAIRS [-o out.json]
    sample-smart calibrate plot grid|fit|reliability INPUT -o figure.png

A calibration file from ``fit`` is what ``DecodeConfig.from_calibration(path, mode=...)``
loads. Every error (empty or malformed input, bad option) is reported as one line naming
the file, the line or the field (``path:line: what``), with exit status 2 and no
traceback. No command writes over one of its inputs (``-o`` equal to an input, also
through a symlink or a hard link, is refused before anything is written); ``grid`` refuses
a trace file given twice and a record that repeats an example already read (same id, model
and gold tokens), naming the ids, since its tokens would count twice.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from sample_smart.io_checks import cli_errors, refuse_overwrite


def _threshold(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (0.0 < value <= 1.0):
        raise click.BadParameter(f"must be in (0, 1], got {value}")
    return value


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.4f}"


@click.group()
def calibrate() -> None:
    """Calibrate decoders from teacher-forced traces (arXiv 2510.05987, sections 3-4)."""


@calibrate.command("grid")
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Grid JSON to write."
)
@click.option(
    "--max-rank",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Ranks 1..R in the grid (at most the traces' top_k).",
)
@click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="A corrupt trace line stops the run (raise) or is skipped with a warning.",
)
@cli_errors
def grid_cmd(traces: tuple[Path, ...], output: Path, max_rank: int, on_error: str) -> None:
    """Build the rank-wise correctness grid from teacher-forced trace files (JSONL)."""
    from sample_smart.calibration import grid_from_traces

    refuse_overwrite(output, traces)
    grid = grid_from_traces(traces, max_rank=max_rank, on_error=on_error)
    grid.save(output)
    acc = ", ".join(_fmt(a) for a in grid.accuracy[::-1])
    click.echo(f"grid: {grid.n_tokens} tokens from {grid.source['n_records']} records -> {output}")
    click.echo(f"tokens per p_max bin (highest first): {grid.counts[::-1].tolist()}")
    click.echo(f"greedy accuracy c(m, 1) per bin (highest first): [{acc}]")


@calibrate.command("fit")
@click.argument("grid_path", metavar="GRID", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibration file to write (loadable by DecodeConfig.from_calibration).",
)
@click.option(
    "--base",
    type=click.Choice(["e", "10"]),
    default="e",
    show_default=True,
    help="Log base of the fit log c = A + B log p (stored with the fit).",
)
@click.option("--weighted", is_flag=True, help="Weight cells by their gold hits (else unweighted).")
@click.option(
    "--n-boot",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Bootstrap resamples for the confidence intervals (0 = none).",
)
@click.option(
    "--ci",
    default=0.95,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Confidence level of the intervals.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option(
    "--min-count",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Exclude bins with fewer positions from the fit.",
)
@click.option(
    "--topk-threshold",
    default=0.05,
    show_default=True,
    type=float,
    callback=_threshold,
    help="Default c of the Calibrated-TopK list stored in the file.",
)
@click.option(
    "--epsilon-threshold",
    default=None,
    type=float,
    callback=_threshold,
    help="Default c_min of Calibrated-epsilon stored in the file (none: give one when loading).",
)
@click.option(
    "--min-samples",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="Bins with fewer positions get K = 1 (greedy) in Calibrated-TopK.",
)
@cli_errors
def fit_cmd(
    grid_path: Path,
    output: Path,
    base: str,
    weighted: bool,
    n_boot: int,
    ci: float,
    seed: int,
    min_count: int,
    topk_threshold: float,
    epsilon_threshold: float | None,
    min_samples: int,
) -> None:
    """Fit the power law on a grid and write a calibration file."""
    from sample_smart.calibration import (
        CalibrationGrid,
        build_calibration,
        equivalent_epsilon,
        fit_grid,
        save_calibration,
    )

    refuse_overwrite(output, [grid_path])
    grid = CalibrationGrid.load(grid_path)
    if grid.n_tokens == 0:
        raise ValueError(f"{grid_path}: the grid holds no tokens")
    fit = fit_grid(grid, base=base, weighted=weighted, min_count=min_count, n_boot=n_boot, ci=ci, seed=seed)
    cal = build_calibration(
        grid,
        fit,
        topk_threshold=topk_threshold,
        epsilon_threshold=epsilon_threshold,
        min_samples=min_samples,
        grid_file=str(grid_path),
    )
    save_calibration(output, cal)
    log = "ln" if fit.base == "e" else "log10"
    pct = f"{100 * ci:g}%"
    click.echo(
        f"fit ({'weighted by hits' if weighted else 'unweighted'}, base {fit.base}): "
        f"{log} c = A + B {log} p over {fit.n_cells} cells ({len(fit.excluded)} excluded)"
    )
    click.echo(f"A = {fit.A:.4f}  {pct} CI [{_fmt(fit.A_ci[0])}, {_fmt(fit.A_ci[1])}]")
    click.echo(f"B = {fit.B:.4f}  {pct} CI [{_fmt(fit.B_ci[0])}, {_fmt(fit.B_ci[1])}]")
    click.echo(f"R^2 = {_fmt(fit.r2)}")
    click.echo(
        f"Calibrated-TopK at c = {topk_threshold} (highest bin first): "
        f"{cal['derived']['calibrated_topk']['dynamic_top_k']}"
    )
    if epsilon_threshold is not None and fit.B > 0:
        click.echo(
            f"Calibrated-epsilon at c_min = {epsilon_threshold}: equivalent epsilon = "
            f"{equivalent_epsilon(fit, epsilon_threshold):.4g}"
        )
    click.echo(f"-> {output}")


@calibrate.command("buckets")
@click.argument("pairs", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON array of 100 probabilities (default: beside PAIRS, same name, .json).",
)
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto", show_default=True)
@click.option(
    "--adaptive-bins",
    default=15,
    show_default=True,
    type=click.IntRange(min=1),
    help="Equal-mass bins of the adaptive ECE.",
)
@cli_errors
def buckets_cmd(pairs: Path, output: Path | None, fmt: str, adaptive_bins: int) -> None:
    """100-bucket confidence calibration of (confidence, correct) pairs (JSONL or CSV)."""
    from sample_smart.calibration import BucketCalibrator, read_pairs
    from sample_smart.calibration._io import write_json

    output = output or pairs.with_suffix(".json")
    refuse_overwrite(output, [pairs])
    conf, correct = read_pairs(pairs, fmt)
    cal = BucketCalibrator(adaptive_bins=adaptive_bins).fit(conf, correct)
    write_json(output, [float(v) for v in cal.filled_])
    s = cal.summary()
    click.echo(f"pairs: {s['n_pairs']}, populated buckets: {s['populated_buckets']} of 100")
    click.echo(f"overall accuracy (raw pairs):    {s['overall_accuracy_raw']:.6f}")
    click.echo(f"overall accuracy (bucket counts): {s['overall_accuracy_buckets']:.6f}")
    click.echo(
        f"ECE = {s['ece']:.4f}  MCE = {s['mce']:.4f}  adaptive ECE ({adaptive_bins} bins) = {s['adaptive_ece']:.4f}"
    )
    click.echo(f"-> {output}")


@calibrate.group("plot")
def plot() -> None:
    """Figures (PNG/PDF/SVG by the output's extension), each stating its conventions."""


_OUT = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Figure file to write."
)


@plot.command("grid")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_OUT
@click.option("--max-rank", default=10, show_default=True, type=click.IntRange(min=1), help="Ranks shown.")
@cli_errors
def plot_grid(path: Path, output: Path, max_rank: int) -> None:
    """Heatmap of c(m, r) from a grid or calibration file."""
    from sample_smart.calibration import load_calibration
    from sample_smart.calibration.plots import plot_grid_heatmap

    refuse_overwrite(output, [path])
    grid, _, _ = load_calibration(path)
    click.echo(str(plot_grid_heatmap(grid, output, max_rank=max_rank)))


@plot.command("fit")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_OUT
@cli_errors
def plot_fit(path: Path, output: Path) -> None:
    """The power-law fit of a calibration file with the grid cells."""
    from sample_smart.calibration import load_calibration
    from sample_smart.calibration.plots import plot_powerlaw_fit

    refuse_overwrite(output, [path])
    grid, fit, _ = load_calibration(path)
    if fit is None:
        raise ValueError(f"{path}: holds no fit; run `sample-smart calibrate fit` first")
    click.echo(str(plot_powerlaw_fit(grid, fit, output)))


@plot.command("reliability")
@click.argument("pairs", type=click.Path(dir_okay=False, path_type=Path))
@_OUT
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv"]), default="auto", show_default=True)
@cli_errors
def plot_reliability_cmd(pairs: Path, output: Path, fmt: str) -> None:
    """Reliability diagram (100 buckets) with the count histogram, from (confidence, correct) pairs."""
    from sample_smart.calibration import BucketCalibrator, read_pairs
    from sample_smart.calibration.plots import plot_reliability

    refuse_overwrite(output, [pairs])
    cal = BucketCalibrator().fit(*read_pairs(pairs, fmt))
    click.echo(str(plot_reliability(cal, output)))


from sample_smart.commands.critic import critic_cmd, critic_merge_cmd  # noqa: E402  (light: heavy imports inside)

calibrate.add_command(critic_cmd)
calibrate.add_command(critic_merge_cmd)
