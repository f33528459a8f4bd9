"""`sample-smart ope`: off-policy evaluation of decoders (phase 1 `prepare`, phase 2 `analyze`).

Every flag and the policy file are checked before a model loads; bad input exits with status 2
and one line naming the field (``cli_errors``). See :mod:`sample_smart.ope`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sample_smart.commands.engine_flags import engine_options, engine_overrides_of
from sample_smart.io_checks import cli_errors


@click.group("ope")
def ope() -> None:
    """Off-policy evaluation of decoders from teacher-forced log-probabilities.

    \b
    The README's run (arith_mini, embedded model; from a clone of the repository):
        sample-smart ope prepare -o runs/ope --policies docs/ope/policies.yaml --pi-bad \\
            --limit 40 --responses 2 --max-gen-toks 64 --oracle-samples 2
        sample-smart ope analyze runs/ope -o docs/ope
    """


@ope.command("prepare")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder (run.json, records.jsonl, oracle.jsonl); rerunning the same command resumes.",
)
@click.option(
    "--task",
    default="arith_mini",
    show_default=True,
    help="Task name (arith_mini, gsm8k_fewshot with --data-dir, any lm-eval generation task) or YAML path.",
)
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local data folder for tasks that accept one (gsm8k_fewshot: train.jsonl/test.jsonl).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=40, show_default=True, help="Prompts (the task's first N)."
)
@click.option(
    "--responses",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Responses of the logging policy per prompt.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Base seed.")
@click.option("--max-gen-toks", type=click.IntRange(min=1), default=None, help="Token cap per response [task's].")
@click.option(
    "--policies",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML/JSON file {logging: settings, targets: {name: settings}} (see sample_smart.ope.policies).",
)
@click.option(
    "--logging",
    "logging_json",
    default=None,
    help='Logging decoder settings as JSON [file\'s, else {"temperature": 1.0}].',
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME=JSON",
    help="A target policy, e.g. 't_0.7={\"temperature\": 0.7}' (repeatable; pi_clone is always added).",
)
@click.option("--pi-bad", is_flag=True, help="Add pi_bad: the logging decoder with an unhelpful system prompt.")
@click.option(
    "--oracle-samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also run every target decoder K times per prompt (the truth for `ope analyze`).",
)
@click.option("--model", default=None, help="Model folder [default: the embedded SmolLM2-135M-Instruct].")
@click.option("-v", "--verbose", is_flag=True, help="Show vLLM's INFO log.")
@engine_options
@cli_errors
def prepare_command(**params: Any) -> None:
    """Phase 1: sample with the logging decoder, teacher-force under every target, judge, label."""
    engine = engine_overrides_of(params)  # checked before any model loads (exit 2 naming the flag)
    from sample_smart.ope.policies import (
        UNHELPFUL_PROMPT,
        build_policies,
        load_policy_file,
        parse_target_option,
    )
    from sample_smart.ope.prepare import PrepareSpec

    logging, targets = (None, {})
    if params["policy_file"]:
        logging, targets = load_policy_file(params["policy_file"])
    if params["logging_json"] is not None:
        try:
            logging = json.loads(params["logging_json"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"--logging: not JSON ({exc})") from None
    for text in params["targets"]:
        name, settings = parse_target_option(text)
        targets[name] = settings
    if params["pi_bad"]:
        if "pi_bad" in targets:
            raise ValueError("--pi-bad: a target 'pi_bad' is already given")
        targets["pi_bad"] = {"system_prompt": UNHELPFUL_PROMPT}
    build_policies(logging, targets, where="policies")  # refused here, before any model loads
    spec = PrepareSpec(
        output_dir=str(params["output_dir"]),
        task=params["task"],
        data_dir=params["data_dir"],
        limit=params["limit"],
        responses=params["responses"],
        seed=params["seed"],
        max_gen_toks=params["max_gen_toks"],
        logging=logging,
        targets=targets,
        oracle_samples=params["oracle_samples"],
        model=params["model"],
    )
    spec.check()
    if not params["verbose"]:
        from sample_smart.commands.eval import quiet_vllm

        quiet_vllm()
    from sample_smart.ope.prepare import prepare

    say = lambda msg: click.echo(f"[sample-smart ope] {msg}", err=True)
    summary = prepare(spec, progress=say, engine_overrides=engine)
    click.echo(json.dumps(summary["last_call"]))


@ope.command("analyze")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where ope_results.json, ope_table.md and ope_estimates.png go [RUN_DIR].",
)
@click.option(
    "--oracle/--no-oracle",
    default=None,
    help="Compare with the oracle (oracle.jsonl required) / ignore it [default: when present].",
)
@cli_errors
def analyze_command(run_dir: Path, output_dir: Path | None, oracle: bool | None) -> None:
    """Phase 2: IPS, SNIPS, DM, DR (raw and calibrated judge) per policy, diagnostics, truth."""
    from sample_smart.ope.analyze import analyze, markdown
    from sample_smart.ope.diagnostics import CloneCheckError

    try:
        result = analyze(run_dir, output_dir=output_dir or run_dir, oracle=oracle)
    except CloneCheckError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(markdown(result))
