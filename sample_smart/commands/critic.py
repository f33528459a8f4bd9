"""`sample-smart calibrate critic` and `calibrate critic-merge`: critic calibration on sampled tokens.

    sample-smart calibrate critic MODEL DATA NUM_SEQUENCES [--split train|val]
        [--critic p_sampled|p_max|model:PATH] [--on-sampled] [--seed N] [--verbose] [-o FILE]
    sample-smart calibrate critic-merge COUNTS... -o FILE

For every target token: one draw from the model's raw softmax (T = 1, full vocabulary,
seeded), scored by the critic, bucketed in 100 buckets of width 0.01 (see
``sample_smart.traces.critic`` and ``sample_smart.calibration.bucket_decoder``). Writes the
JSON array of 100 probabilities to FILE and the counts (with what was sampled, the critic,
the isotonic values) to ``<FILE stem>.counts.json``, which ``critic-merge`` adds up and
``DecodeConfig.from_calibration`` turns into a decoder. Bad input exits with status 2 and one
line naming what is wrong, before the model loads where possible.

Heavy imports (torch, transformers) happen inside the commands only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import click

from sample_smart.io_checks import cli_errors, distinct_inputs, refuse_overwrite


def _critic_spec(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from sample_smart.traces.critic import Critic

    try:
        Critic.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _report(echo: Callable[[str], Any], data: dict, values: Path, counts: Path) -> None:
    echo(f"positions: {data['n_positions']}, populated buckets: {data['populated_buckets']} of 100")
    if data.get("overall_accuracy_samples") is not None:
        echo(f"overall accuracy (samples):       {data['overall_accuracy_samples']:.6f}")
    echo(f"overall accuracy (bucket counts): {data['overall_accuracy_buckets']:.6f}")
    echo(
        f"ECE = {data['ece']:.4f}  MCE = {data['mce']:.4f}"
        + (f"  adaptive ECE (15 bins) = {data['adaptive_ece']:.4f}" if data.get("adaptive_ece") is not None else "")
    )
    echo(f"-> {values} (100 values)  {counts} (counts, metadata, isotonic values)")


@click.command("critic")
@click.argument("model_spec", metavar="MODEL")
@click.argument("data", metavar="DATA")
@click.argument("num_sequences", metavar="NUM_SEQUENCES", type=click.IntRange(min=1))
@click.option(
    "--split",
    type=click.Choice(["train", "val"]),
    default="val",
    show_default=True,
    help="For a DATA folder (train.jsonl / val.jsonl) or a task: which split.",
)
@click.option(
    "--critic",
    "critic_spec",
    default="p_sampled",
    show_default=True,
    callback=_critic_spec,
    help="p_sampled (the model's probability of the sampled token), p_max, or model:PATH "
    "(a second model's probability of the sampled token; same vocabulary).",
)
@click.option(
    "--on-sampled",
    is_flag=True,
    help="The critic scores the sampled sequence (gold tokens replaced by the draws), not the gold prefix.",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Sampling seed.")
@click.option("--verbose", is_flag=True, help="Print the non-empty buckets every 100 sequences.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON array of 100 values (default: beside a checkpoint, latest.pt -> latest.json; "
    "<folder>/critic_calibration.json for a model folder).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the reliability diagram with the bucket counts (PNG/PDF/SVG).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="gsm8k_fewshot: the folder with train.jsonl/test.jsonl (val = test).",
)
@click.option(
    "--chat-template/--raw",
    "chat_template",
    default=True,
    show_default=True,
    help="Render prompts with the tokenizer's chat template, or tokenize them as they are.",
)
@click.option("--id-field", default="id", show_default=True, help="JSONL data: field of the example id.")
@click.option("--prompt-field", default="prompt", show_default=True, help="JSONL data: field of the prompt.")
@click.option("--target-field", default="target", show_default=True, help="JSONL data: field of the target.")
@click.option(
    "--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Sequences per forward pass."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's; on a shared machine 1 can be several times faster).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def critic_cmd(
    model_spec: str,
    data: str,
    num_sequences: int,
    split: str,
    critic_spec: str,
    on_sampled: bool,
    seed: int,
    verbose: bool,
    output: Path | None,
    plot_path: Path | None,
    data_dir: Path | None,
    chat_template: bool,
    id_field: str,
    prompt_field: str,
    target_field: str,
    batch_size: int,
    threads: int | None,
    progress: bool,
) -> None:
    """Critic calibration on tokens sampled from MODEL's raw softmax over NUM_SEQUENCES of DATA.

    MODEL: a model folder, a checkpoint file (.pt/.pth/.bin/.safetensors with config and
    tokenizer in its folder), a cached hub name, or - for the embedded model. DATA: a JSONL of
    prompt/target pairs, a folder with train.jsonl/val.jsonl, or a task (arith_mini, gsm8k_fewshot).
    """
    from sample_smart.calibration.bucket_decoder import build_counts_file, counts_path, write_calibration
    from sample_smart.traces.critic import SAMPLED_FROM, Critic, resolve_data, resolve_model

    critic = Critic.parse(critic_spec, on_sampled)
    source = resolve_model(model_spec)
    critic_source = resolve_model(critic.path) if critic.name == "model" else None
    ds = resolve_data(data, split, data_dir, id_field=id_field, prompt_field=prompt_field, target_field=target_field)
    output = output or source.default_output
    if output is None:
        raise ValueError(f"model {model_spec!r} has no folder to write beside; pass -o/--output")
    inputs = [ds.path, source.weights, critic_source and critic_source.weights]
    for out in (output, counts_path(output), plot_path):
        if out is not None:
            refuse_overwrite(out, inputs, option="-o/--output or --plot")
    if output.name.endswith(".counts.json"):
        raise ValueError(f"{output}: the values file must not end in .counts.json (the counts file's name)")
    examples = ds.examples(num_sequences)  # reads and checks the data before any model loads
    if not examples:
        raise ValueError(f"DATA {data!r}: no examples")

    import transformers
    from transformers import AutoTokenizer

    from sample_smart.traces.critic import encode_all, load_model, run_critic_calibration

    transformers.logging.set_verbosity_error()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    encoded = encode_all(AutoTokenizer.from_pretrained(source.folder), examples, chat_template)
    t0 = time.perf_counter()
    model, tokenizer = load_model(source)
    critic_model = None
    if critic_source is not None:
        same = critic_source.folder == source.folder and critic_source.weights == source.weights
        if same:
            critic_model = model
        else:
            critic_model, critic_tok = load_model(critic_source)
            if critic_tok.get_vocab() != tokenizer.get_vocab():
                raise ValueError(
                    f"critic model {critic_source.name}: its tokenizer differs from the model's; "
                    "a critic scores the sampled token id, so both must share one vocabulary"
                )
    echo = click.echo
    result = run_critic_calibration(
        encoded,
        model,
        tokenizer,
        critic=critic,
        critic_model=critic_model,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        verbose_every=100 if verbose else 0,
        echo=echo,
    )
    wall = time.perf_counter() - t0
    cal = result.calibrator()  # checks the raw and bucket accuracies agree, and gives the adaptive ECE
    meta = {
        "sampled_from": SAMPLED_FROM,
        "critic": critic.describe(critic_source.name if critic_source else None),
        "runs": [
            {
                "model": source.name,
                "data": ds.description,
                "num_sequences_requested": num_sequences,
                "n_sequences": result.n_sequences,
                "n_positions": result.n_positions,
                "seed": seed,
                "chat_template": chat_template,
                "draws_sha256": result.draws_sha256,
            }
        ],
    }
    content = build_counts_file(
        meta,
        result.counts,
        result.correct,
        result.score_sums,
        result.overall_accuracy_samples,
        extra={"adaptive_ece": cal.adaptive_ece_, "adaptive_bins": cal.adaptive_bins},
    )
    if content["filled"] != [float(v) for v in cal.filled_]:
        raise RuntimeError("bucket values from the counts and from the pairs disagree")
    values, counts = write_calibration(output, content)
    if result.n_sequences < num_sequences:
        echo(f"note: DATA holds {result.n_sequences} sequences, fewer than the {num_sequences} asked for")
    echo(f"sequences: {result.n_sequences}, wall time {wall:.1f} s (model load + sampling + critic)")
    _report(echo, content, values, counts)
    if plot_path is not None:
        from sample_smart.calibration.plots import plot_reliability

        echo(
            str(
                plot_reliability(
                    cal,
                    plot_path,
                    title=f"critic {critic.name} ({critic.prefix} prefix) on tokens "
                    "sampled from the raw softmax, T = 1; 100 buckets",
                )
            )
        )


@click.command("critic-merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON array of 100 values of the merged counts (counts file beside it).",
)
@cli_errors
def critic_merge_cmd(inputs: tuple[Path, ...], output: Path) -> None:
    """Add the bucket counts of several `calibrate critic` runs (same sampled distribution and critic).

    INPUTS: counts files (*.counts.json), or values files with their counts file beside them."""
    from sample_smart.calibration.bucket_decoder import counts_path, merge, write_calibration

    distinct_inputs([counts_path(p) for p in inputs])
    for out in (output, counts_path(output)):
        refuse_overwrite(out, [*inputs, *map(counts_path, inputs)])
    content = merge(list(inputs))
    values, counts = write_calibration(output, content)
    click.echo(f"merged {len(inputs)} runs")
    _report(click.echo, content, values, counts)
