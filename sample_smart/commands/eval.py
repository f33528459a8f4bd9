"""`sample-smart eval`: an lm-eval task through vLLM with any sample_smart decoder, N repeats, maj@k.

Every decoder flag of the reference ``run.py`` is here, validated when the command line is
parsed (a click callback per flag, then one that combines them into a DecodeConfig), so a bad
value is refused, naming the flag and the allowed range, before any model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from sample_smart.commands.engine_flags import engine_options, engine_overrides_of
from sample_smart.commands.shard_flag import shard_option
from sample_smart.config import KNOBS, DecodeConfig
from sample_smart.io_checks import cli_errors

# The comparison of `--compare` (the README's main job): label -> settings; the calibrated
# decoders are added from --calibration.
COMPARE_PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "sampling_t1": {"temperature": 1.0},
    "min_p_0.1": {"min_p": 0.1},
    "greedy_threshold_0.3": {"greedy_threshold": 0.3},
}


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (lm-eval's numpy_random_seed) takes 0..2**32-1


def quiet_vllm() -> None:
    """Show only vLLM's warnings and errors (its INFO log prints a whole engine configuration per
    engine); read by vLLM when it is first imported, so call this before that. A value the user set wins."""
    import os

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def _check_knob(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Validate one decoder flag alone (DecodeConfig's message, re-worded for the flag)."""
    if value is None:
        return None
    try:
        DecodeConfig.from_dict({param.name: value})
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def decoder_options(command: Callable) -> Callable:
    """One click option per knob of :data:`sample_smart.config.KNOBS` (``--top-k`` for ``top_k``),
    typed and checked alone as the flag is parsed; the help is the knob's meaning and range."""
    for knob in reversed(list(KNOBS.values())):
        command = click.option(
            f"--{knob.key.replace('_', '-')}",
            knob.key,
            type=knob.cli_type,
            default=None,
            callback=_check_knob,
            help=f"{knob.help} Allowed: {knob.allowed}.",
        )(command)
    return command


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value < 1:
        raise click.BadParameter(f"{value} is invalid: allowed an integer >= 1", ctx=ctx, param=param)
    return value


def build_decoder(params: dict[str, Any]) -> tuple[DecodeConfig | None, str | None]:
    """``(DecodeConfig of the decoder flags and --calibration, label)``; ``(None, None)`` when no
    decoder flag is given. Raises click.BadParameter / UsageError naming the flag."""
    settings = {k: params[k] for k in KNOBS if params.get(k) is not None}
    calibration = params.get("calibration")
    label_parts = []
    if calibration is not None and not params.get("compare"):
        mode, threshold = params["calibration_mode"], params.get("calibration_threshold")
        try:
            extra = DecodeConfig.from_calibration(str(calibration), mode, threshold).to_dict()
        except (ValueError, OSError, KeyError) as exc:
            raise click.BadParameter(f"{calibration}: {exc}", param_hint="'--calibration'") from None
        clash = sorted(set(extra) & set(settings))
        if clash:
            raise click.UsageError(f"--calibration (mode {mode}) sets {', '.join(clash)}; do not also pass those flags")
        settings.update(extra)
        label_parts.append(f"calibrated_{mode}")
    if not settings:
        return None, None
    try:
        cfg = DecodeConfig.from_dict(settings)
    except ValueError as exc:
        raise click.UsageError(f"decoder flags do not combine: {exc}") from None
    label_parts += [
        f"{k}_{v}".replace(" ", "")
        for k, v in cfg.to_dict().items()
        if k not in ("cal_acc", "dynamic_top_k", "cal_acc_base")
    ]
    return cfg, "+".join(label_parts) or "decoder"


def _decoders(params: dict[str, Any]) -> list[tuple[str, DecodeConfig]]:
    """The (label, decoder) pairs to run, built before any model loads."""
    cfg, label = build_decoder(params)
    if params.get("label"):
        label = params["label"]
    if not params.get("compare"):
        return [(label or "greedy", cfg or DecodeConfig(temperature=0.0))]
    runs = [(name, DecodeConfig.from_dict(s)) for name, s in COMPARE_PRESETS.items()]
    calibration = params.get("calibration")
    if calibration is not None:
        for mode in ("epsilon", "topk"):
            try:
                # one threshold (an estimated correctness) serves both modes; default: the file's
                runs.append(
                    (
                        f"calibrated_{mode}",
                        DecodeConfig.from_calibration(str(calibration), mode, params.get("calibration_threshold")),
                    )
                )
            except (ValueError, OSError, KeyError) as exc:
                raise click.BadParameter(f"{calibration}: {exc}", param_hint="'--calibration'") from None
    if cfg is not None:
        runs.append((label or "custom", cfg))
    return runs


def results_table(rows: list[dict[str, Any]], k: int) -> str:
    """The accuracy / maj@k / pass@k table of eval results, one line per decoder."""
    head = (
        f"{'decoder':<24} {'acc':>6} {'maj@' + str(k):>7} {'pass@' + str(k):>7} {'distinct':>8} "
        f"{'invalid':>7} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"{r['label']:<24} {m['accuracy']:>6.3f} {m['maj_at_k'][str(k)]:>7.3f} "
            f"{m['pass_at_k'][str(k)]:>7.3f} {m['mean_distinct_answers']:>8.2f} "
            f"{m['invalid_rate']:>7.3f} {r['wall_time_s']:>7.1f}"
        )
    return "\n".join(lines)


@click.command("eval")
@click.option(
    "--task-config",
    "task",
    default="arith_mini",
    show_default=True,
    help="A task name (sample_smart's arith_mini, gsm8k_fewshot, bbh_cot_fewshot_mini, or any lm-eval task) "
    "or the path of an lm-eval task YAML.",
)
@click.option(
    "--model", default=None, help="Model folder or hub id for vLLM [default: the embedded SmolLM2-135M-Instruct]."
)
@decoder_options
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Calibration file (sample-smart calibrate fit) for a calibrated decoder.",
)
@click.option(
    "--calibration-mode",
    type=click.Choice(["epsilon", "topk"]),
    default="epsilon",
    show_default=True,
    help="Which calibrated decoder --calibration gives.",
)
@click.option(
    "--calibration-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="c_min (epsilon) or c (topk); default: the file's default threshold.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Run greedy, sampling T=1, min-p 0.1, Greedy-Threshold 0.3 (and Calibrated-epsilon/TopK with "
    "--calibration, and the decoder of the flags if any) with one engine; print a table.",
)
@click.option(
    "--repeats",
    type=int,
    default=1,
    show_default=True,
    callback=_positive,
    help="Sampled answers per question (maj@k and pass@k for k up to this).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, SEED_MAX),
    default=0,
    show_default=True,
    help=f"Base seed 0..{SEED_MAX} (what numpy and lm-eval accept); repeat r of a question gets a "
    "seed derived from (seed, r, prompt).",
)
@click.option("--limit", type=int, default=None, callback=_positive, help="Questions per task (first N).")
@click.option(
    "--max-gen-toks",
    type=int,
    default=None,
    callback=_positive,
    help="Cap on generated tokens per answer [default: the task's].",
)
@click.option("--num-fewshot", type=click.IntRange(min=0), default=None, help="Override the task's number of shots.")
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local data folder for tasks that accept one (gsm8k_fewshot: train.jsonl/test.jsonl).",
)
@click.option(
    "--max-model-len",
    type=int,
    default=None,
    callback=_positive,
    help="vLLM context length [default 512 on CPU; GSM8K 8-shot needs ~1536].",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval_runs"),
    show_default=True,
    help="Where the metrics JSON and samples JSONL go (timestamped names).",
)
@click.option(
    "--write-traces", is_flag=True, help="Also write a generation trace per sample (raw rank and p_max per token)."
)
@click.option(
    "--trace-top-k",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Top-k logprobs kept per traced token.",
)
@click.option("--label", default=None, help="Name of the run in file names and the table.")
@click.option("--apply-chat-template", is_flag=True, help="Wrap prompts in the model's chat template.")
@shard_option
@engine_options
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show vLLM's INFO log (engine configuration and progress); by default only its warnings and errors.",
)
@cli_errors
def eval_command(**params: Any) -> None:
    """Evaluate decoders on an lm-eval task with vLLM: accuracy, maj@k, pass@k per decoder.

    \b
    The comparison of the README (arith_mini, embedded model; from a clone of the repository):
        sample-smart eval --compare --limit 25 --repeats 4 --max-gen-toks 64 \\
            --calibration docs/calibration/calibration.json --calibration-threshold 0.05
    GSM8K from local files, 8-shot (needs a longer context):
        sample-smart eval --task-config gsm8k_fewshot --data-dir DIR --max-model-len 1536 \\
            --limit 100 --repeats 4 --max-gen-toks 256 --min-p 0.1
    The ten-curve figure (maj@k vs k, sampling in one p_max decile only):
        for b in $(seq 1 10); do sample-smart eval --confidence-bin-only $b --temperature 1 \\
            --repeats 8 --limit 50 --output-dir bins; done
        sample-smart analyze bins bins/*_metrics.json -o bins
    Several GPUs, or shards on several machines (then `sample-smart merge eval`):
        sample-smart eval --model MODEL --tensor-parallel-size 4 --shard 0/2 \\
            --repeats 32 --temperature 1

    Files: <task>_<label>_<UTC time>_{metrics.json,samples.jsonl[,traces.jsonl]}.
    Without decoder flags the run is greedy.
    """
    runs = _decoders(params)  # every flag is checked before the model loads
    if not params["verbose"]:
        quiet_vllm()
    engine = engine_overrides_of(params, own={"max_model_len": "--max-model-len"})
    from sample_smart.integrations.lm_eval import SampleSmartLM
    from sample_smart.integrations.lm_eval_runner import EvalSpec, check_task, run_eval

    say = lambda msg: click.echo(f"[sample-smart eval] {msg}", err=True)
    try:  # the task too is checked before the engine starts
        check_task(params["task"], params["data_dir"])
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--task-config'") from None
    lm = SampleSmartLM(
        pretrained=params["model"],
        max_model_len=params["max_model_len"],
        seed=params["seed"],
        trace_top_k=params["trace_top_k"],
        engine_args=engine,
    )
    rows = []
    for label, cfg in runs:
        spec = EvalSpec(
            task=params["task"],
            decoder=cfg,
            label=label,
            repeats=params["repeats"],
            seed=params["seed"],
            limit=params["limit"],
            max_gen_toks=params["max_gen_toks"],
            num_fewshot=params["num_fewshot"],
            data_dir=params["data_dir"],
            output_dir=params["output_dir"],
            write_traces=params["write_traces"],
            apply_chat_template=params["apply_chat_template"],
            shard=params["shard"],
        )
        result = run_eval(lm, spec, progress=say)
        rows.append(result)
        say(
            f"{label}: accuracy {result['metrics']['accuracy']:.3f} in {result['wall_time_s']:.1f} s -> "
            f"{result['files']['metrics']}"
        )
    click.echo(results_table(rows, params["repeats"]))
    sys.stdout.flush()
