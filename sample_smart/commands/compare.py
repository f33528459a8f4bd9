"""`sample-smart compare`: compare models token by token (entropy, p(next), rank, KL, Delta p).

The decoder flags (generation mode) are ``sample-smart eval``'s own click options, reused as
they are (same names, checks and help), and combined by ``eval.build_decoder``. Every flag,
model folder, vocabulary and prompt is checked before any model loads; bad input exits 2
with a one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sample_smart.commands import eval as _eval
from sample_smart.commands.eval import build_decoder, eval_command

# eval's decoder flags (the options it checks with its per-knob callback), its calibration options and seed
_EVAL_OPTIONS = [
    p
    for p in eval_command.params
    if getattr(p, "callback", None) is _eval._check_knob
    or p.name in ("calibration", "calibration_mode", "calibration_threshold", "seed")
]


def _models(values: tuple[str, ...]) -> list[str]:
    """``--model`` values; with fewer than two, the embedded model is the base (first)."""
    from sample_smart.analysis.compare_run import EMBEDDED

    models = list(values)
    if len(models) == 1:
        models.insert(0, EMBEDDED)
    return models


def _names(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


@click.command("compare")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model folder, a name in the local Hugging Face cache, 'embedded' (SmolLM2-135M-Instruct) or "
    "'embedded-bf16' (its weights cast to bfloat16, made on first use). Repeat for each model, "
    "base first; with one --model the embedded model is the base.",
)
@click.option(
    "--model-names",
    "names",
    multiple=True,
    help="One name per model (comma-separated or repeated) for files and tables [default: folder names].",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL, one example per line: prompt (and target with --teacher-forced).",
)
@click.option(
    "--teacher-forced",
    is_flag=True,
    help="Every model scores the same reference continuation (positions align: KL, Δp, same-top). "
    "Default: each model generates and scores its own tokens.",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Generation mode: tokens generated per prompt and model [default 64].",
)
@click.option("--output-dir", type=click.Path(file_okay=False), default="runs/compare", show_default=True)
@click.option(
    "--experiment-name",
    default="compare",
    show_default=True,
    help="First part of every file name (then the UTC start time); recorded in the summary.",
)
@click.option(
    "--quantiles",
    "n_quantiles",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Number of entropy quantiles (pandas.qcut, per model).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N valid examples.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Teacher-forced sequences per forward pass.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=2),
    default=None,
    help="Cap on prompt + continuation tokens [default: the smallest context of the models].",
)
@click.option(
    "--chat-template/--raw",
    "chat_template",
    default=True,
    show_default=True,
    help="Render prompts with the first model's chat template, or tokenise them as they are.",
)
@click.option("--id-field", default="id", show_default=True)
@click.option("--prompt-field", default="prompt", show_default=True)
@click.option("--target-field", default="target", show_default=True)
@click.option("--device", default=None, help="torch device [default: cpu].")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="dtype the models are loaded and run in.",
)
@click.option(
    "--backend",
    type=click.Choice(["transformers"]),
    default="transformers",
    show_default=True,
    help="transformers: exact, full vocabulary (vLLM's logprobs are top-k only; see the docs).",
)
@click.option("--new-run", is_flag=True, help="Start a new run even if one with the same settings can be continued.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def compare(**params: Any) -> None:
    """Compare >= 2 models token by token: entropy (nats), p(next), rank, p_max; KL and Δp when aligned.

    \b
    The embedded model against its bfloat16 copy, teacher-forced on GSM8K answers:
        sample-smart compare --model embedded --model embedded-bf16 --teacher-forced \\
            --data test.jsonl --prompt-field question --target-field answer --limit 40
    Generation (each model's own tokens), decoder flags as in `sample-smart eval`:
        sample-smart compare --model A --model B --data prompts.jsonl --max-new-tokens 64 --min-p 0.1

    Files in --output-dir, named <experiment>_<UTC time>_...: run.json, tokens.jsonl (one line per
    prompt; rerunning the same command continues it), prompts/<id>/<model>.csv + texts.json,
    tokens_<model>.csv, pairs.csv, by_current_token.csv, by_next_token.csv, entropy_quantiles.csv
    (and .parquet with pyarrow), summary_stats.json, model_comparison.json, figures (PNG).
    """
    from sample_smart.analysis.compare_run import CompareSpec, prepare, run_compare

    teacher_forced = params["teacher_forced"]
    decoder, _ = build_decoder(params)
    if teacher_forced and (decoder is not None or params["max_new_tokens"] is not None):
        raise click.UsageError(
            "decoder flags and --max-new-tokens apply to generation; drop them with --teacher-forced"
        )
    spec = CompareSpec(
        models=_models(params["models"]),
        names=_names(params["names"]),
        data=params["data"],
        output_dir=params["output_dir"],
        mode="teacher_forced" if teacher_forced else "generation",
        experiment_name=params["experiment_name"],
        max_new_tokens=params["max_new_tokens"] or 64,
        decoder=decoder,
        seed=params["seed"],
        chat_template=params["chat_template"],
        id_field=params["id_field"],
        prompt_field=params["prompt_field"],
        target_field=params["target_field"],
        limit=params["limit"],
        batch_size=params["batch_size"],
        n_quantiles=params["n_quantiles"],
        max_length=params["max_length"],
        device=params["device"],
        dtype=params["dtype"],
        resume=not params["new_run"],
    )
    say = lambda msg: click.echo(f"[sample-smart compare] {msg}", err=True)
    try:
        plan = prepare(spec)  # everything checkable without a model, before any model loads
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for err in plan.errors:
        say(f"skipping example {err['id']!r}: {err['error']}")
    try:
        result = run_compare(spec, progress=params["progress"], plan=plan)
    except ValueError as exc:  # e.g. a corrupt line in the run's own files (path:line)
        raise click.UsageError(str(exc)) from None
    for err in result["errors"]:
        if err["stage"] == "run":
            say(f"skipped example {err['id']!r}: {err['error']}")
    say(("continued " if result["resumed"] else "wrote ") + f"{result['prefix']}_* ({result['counts']})")
    summary = json.loads(Path(result["files"]["summary_stats"]).read_text())
    for name, m in summary["per_model"].items():
        if m["n_tokens"]:
            say(
                f"{name}: {m['n_tokens']} tokens, mean entropy {m['entropy_nats']['mean']:.4f} nats, "
                f"mean p(next) {m['p_next']['mean']:.4f}, PPL {m['perplexity']:.4f}"
            )
    for r in summary["pairs"].values():
        if r["n_positions"]:
            se = lambda v: "n/a" if v is None else f"{v:.3g}"
            say(
                f"{r['base']} vs {r['other']}: mean KL {r['mean_kl']:.4g} ± {se(r['mean_kl_se'])} nats, "
                f"RMS Δp {r['rms_delta_p']:.4g}, same top {100 * r['same_top_share']:.2f} ± "
                f"{100 * r['same_top_share_se']:.2f} %, "
                f"ln(PPL_other/PPL_base) {r['ln_ppl_ratio']:.4g} ± {se(r['ln_ppl_ratio_se'])}"
            )
    click.echo(
        json.dumps(
            {"prefix": result["prefix"], "counts": result["counts"], "summary": result["files"]["summary_stats"]}
        )
    )


compare.params.extend(_EVAL_OPTIONS)
