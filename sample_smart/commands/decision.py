"""`sample-smart decision ...`: decision-token probabilities (Accept/Reject, Yes/No, A-D) of a classifier LM.

    sample-smart decision finetune -o runs/decision            # the proof run: Trainer + DecisionTokenCallback
    sample-smart decision extract --model CKPT --data D.jsonl \\
        --labels accept=Accept,accept --labels reject=Reject,reject -o probs.jsonl
    sample-smart decision plot runs/decision/trainer_state.json runs/decision/decision.jsonl -o docs/decision

Conventions (first-token probability, raw softmax, mass, ECE bins): :mod:`sample_smart.analysis.decision`.
Errors in flags or input files are one line naming the flag, the file and line, or the label, and
exit with status 2 (no traceback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sample_smart.io_checks import cli_errors


def _labels(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, list[str]]:
    from sample_smart.analysis.decision import parse_label_specs

    try:
        return parse_label_specs(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def decision() -> None:
    """Decision-token probabilities: during fine-tuning, per checkpoint, and their plots."""


@decision.command("finetune")
@click.option(
    "-o",
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: trainer_state.json, decision.jsonl, run.json (must not hold a decision.jsonl yet).",
)
@click.option("--model", default=None, help="Model folder (default: the embedded SmolLM2-135M-Instruct, fp32).")
@click.option("--n-train", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--n-eval", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--eval-steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--lr",
    "learning_rate",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=2e-5,
    show_default=True,
    help="AdamW learning rate, constant schedule.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--padding-side", type=click.Choice(["right", "left"]), default="right", show_default=True)
@click.option(
    "--save-model/--no-save-model",
    default=False,
    show_default=True,
    help="Also save the final model in OUTPUT_DIR/final (for `decision extract`).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def finetune(output_dir: Path, model: str | None, **kwargs: Any) -> None:
    """Fine-tune on the generated Accept/Reject arithmetic task with the callback measuring (CPU, minutes)."""
    from sample_smart.integrations.decision_finetune import run_decision_finetune

    info = run_decision_finetune(output_dir, model=model, **kwargs)
    first, last = info["measurements"][0], info["measurements"][-1]
    click.echo(
        json.dumps({"output_dir": str(output_dir), "wall_time_s": info["wall_time_s"], "first": first, "last": last})
    )


@decision.command("extract")
@click.option("--model", default=None, help="Checkpoint folder (default: the embedded SmolLM2-135M-Instruct, fp32).")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help='Input JSONL: {"id", "prompt", "target"?, "gt"?} per line.',
)
@click.option(
    "--labels",
    "labels",
    multiple=True,
    required=True,
    callback=_labels,
    metavar="CLASS=WORD[,WORD...]",
    help="A class and its label words (repeat per class); leading-space variants are added.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output JSONL (appended, resumable)."
)
@click.option(
    "--answer-prefix",
    default=None,
    help="Only a label token right after this text counts (with a target), or this text is appended "
    'to the prompt (without one), e.g. "\\boxed{".',
)
@click.option(
    "--backend",
    type=click.Choice(["transformers"]),
    default="transformers",
    show_default=True,
    help="Only transformers for now (exact full-vocabulary softmax).",
)
@click.option("--chat-template/--raw", "chat_template", default=True, show_default=True)
@click.option("--id-field", default="id", show_default=True)
@click.option("--prompt-field", default="prompt", show_default=True)
@click.option("--target-field", default="target", show_default=True)
@click.option("--gt-field", default="gt", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=None)
@click.option(
    "--step",
    type=click.IntRange(min=0),
    default=None,
    help="Training step to record (default: global_step of MODEL/trainer_state.json, if any).",
)
@click.option("--device", default=None, help="torch device (default cpu).")
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def extract(
    model: str | None, data: str, labels: dict[str, list[str]], output: str, backend: str, **kwargs: Any
) -> None:
    """Per-example decision-token probabilities of one checkpoint (p_<class>, mass, confidence, gt, pred, correct)."""
    from sample_smart.analysis.decision_extract import extract_decisions

    if model is None:
        from sample_smart.models import ModelNotAvailableError, require_default_model

        try:
            model = str(require_default_model())
        except ModelNotAvailableError as exc:
            raise ValueError(str(exc)) from None  # cli_errors: one line, exit 2
    counts = extract_decisions(data, output, model=model, labels=labels, **kwargs)
    click.echo(json.dumps({"output": output, **counts}))


@decision.command("plot")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for evolution.png, reliability.png, confidence_hist.png, summary.json, summary.md.",
)
@cli_errors
def plot(inputs: tuple[str, ...], output_dir: str) -> None:
    """Evolution over steps, reliability diagrams and confidence histograms; prints the summary table.

    INPUTS: trainer_state.json files (*.json) and/or decision JSONL files (callback or extract)."""
    from sample_smart.analysis.decision_plots import write_report

    report = write_report(inputs, output_dir)
    click.echo(report["table"], nl=False)
    click.echo(json.dumps({"figures": report["figures"], "summary": report["summary"]}))
