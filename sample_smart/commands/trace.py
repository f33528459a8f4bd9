"""`sample-smart trace ...`: record per-token rank/probability traces as JSONL.

* ``trace teacher-force``: score (prompt, target) pairs by teacher forcing
  (schema ``sample_smart.teacher_forced/1``), backend transformers (exact, full-vocabulary
  entropy) or vllm (prompt logprobs, top-k entropy);
* ``trace generate``: generate with vLLM and record the raw rank/logprob of every sampled
  token (schema ``sample_smart.generation/1``), plus the reference
  ``low_conf_ranks_*.jsonl`` / ``all_sampled_ranks_*.jsonl`` files on request.

Both stream to the output file (one line per record, flushed per record), show a progress
bar, accept ``--limit`` and resume: records already in the output (keyed by example id)
are skipped on a rerun. An output that is the data file (also through a symlink or hard
link) is refused; a bad data line is reported as ``path:line: what`` with exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sample_smart.commands.engine_flags import engine_options, engine_overrides_of
from sample_smart.commands.shard_flag import shard_option
from sample_smart.io_checks import cli_errors, refuse_overwrite


def _model_path(model: str | None) -> str:
    if model:
        return model
    from sample_smart.models import ModelNotAvailableError, require_default_model

    try:
        return str(require_default_model())
    except ModelNotAvailableError as exc:
        raise click.ClickException(str(exc)) from exc


def _count_lines(path: str) -> int:
    import os

    from sample_smart.io_checks import open_regular

    fd, _ = open_regular(path)  # a FIFO or device is refused, not read forever
    with os.fdopen(fd, "rb") as f:
        return sum(1 for line in f if line.strip())


def _data_options(fn):
    fn = engine_options(fn)
    fn = shard_option(fn)
    fn = click.option("--target-field", default="target", show_default=True, help="JSON field of the target text.")(fn)
    fn = click.option(
        "--prompt-field",
        default="prompt",
        show_default=True,
        help="JSON field of the prompt (a string, or chat messages with --chat-template).",
    )(fn)
    fn = click.option(
        "--id-field",
        default="id",
        show_default=True,
        help="JSON field of the example id (missing: the 0-based line index among examples).",
    )(fn)
    fn = click.option(
        "--chat-template/--raw",
        "chat_template",
        default=True,
        show_default=True,
        help="Render prompts with the tokenizer's chat template, or tokenize them as they are.",
    )(fn)
    fn = click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=None,
        help="Use at most this many examples from the start of the data file.",
    )(fn)
    fn = click.option(
        "--resume/--no-resume",
        default=True,
        show_default=True,
        help="Skip examples whose id already has a record in the output file.",
    )(fn)
    fn = click.option("--progress/--no-progress", default=True, show_default=True)(fn)
    fn = click.option(
        "--top-k",
        type=click.IntRange(1, 1000),
        default=20,
        show_default=True,
        help="How many top token ids/logprobs to keep per position.",
    )(fn)
    fn = click.option(
        "--model", default=None, help="Model folder or name (default: the embedded SmolLM2-135M-Instruct)."
    )(fn)
    fn = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output JSONL file.")(fn)
    fn = click.option(
        "--data", required=True, type=click.Path(exists=True, dir_okay=False), help="Input JSONL, one example per line."
    )(fn)
    return fn


def _engine(model: str, top_k: int, **overrides):
    from sample_smart.integrations.vllm_engine import make_llm

    return make_llm(model, max_logprobs=max(20, top_k), **overrides)


@click.group()
def trace() -> None:
    """Record per-token rank/probability traces (JSONL, crash-safe, resumable)."""


@trace.command("teacher-force")
@_data_options
@click.option(
    "--backend",
    type=click.Choice(["transformers", "vllm"]),
    default="transformers",
    show_default=True,
    help="transformers: exact full-vocabulary entropy; vllm: prompt logprobs, entropy over the top-k only.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Sequences per forward pass (transformers) / per engine call chunk (vllm: x4).",
)
@click.option("--device", default=None, help="transformers backend: torch device (cpu, cuda, cuda:1, mps).")
@click.option(
    "--reference-out",
    type=click.Path(dir_okay=False),
    default=None,
    help='Also write the reference {"gt","top_ids","top_probs"} lines (one per target token) here.',
)
@cli_errors
def teacher_force(
    data,
    output,
    model,
    top_k,
    progress,
    resume,
    limit,
    chat_template,
    id_field,
    prompt_field,
    target_field,
    backend,
    batch_size,
    device,
    reference_out,
    shard,
    **engine,
) -> None:
    """Teacher-force (prompt, target) pairs: gold rank, logprob, p_max, entropy, top-k per target token.

    Input lines: {"id": ..., "prompt": ..., "target": ...}. Output: one
    sample_smart.teacher_forced/1 record per example; natural-log probabilities of the raw
    distribution; rank 1 = argmax.
    """
    from sample_smart.traces.examples import load_examples
    from sample_smart.traces.reference import ReferenceTeacherForcedWriter
    from sample_smart.traces.teacher_forcing import run_teacher_forcing

    refuse_overwrite(output, [data])
    if reference_out:
        refuse_overwrite(reference_out, [data, output], option="--reference-out")
    overrides = engine_overrides_of(engine)
    if overrides and backend != "vllm":
        raise click.UsageError(f"engine flags ({', '.join(sorted(overrides))}) apply to --backend vllm only")
    model = _model_path(model)
    if backend == "transformers":
        from sample_smart.traces.transformers_backend import TransformersTeacherForcer

        scorer = TransformersTeacherForcer(model, top_k=top_k, device=device, batch_size=batch_size)
        chunk = batch_size * 4
    else:
        if device not in (None, "cpu"):
            raise click.BadParameter(
                "the vllm backend picks its own device; leave --device unset", param_hint="--device"
            )
        from sample_smart.traces.vllm_backend import VLLMTeacherForcer

        scorer = VLLMTeacherForcer(_engine(model, top_k, **overrides), top_k=top_k)
        chunk = batch_size * 4
    examples = load_examples(data, id_field=id_field, prompt_field=prompt_field, target_field=target_field)
    if shard is not None:  # --limit first (the first N examples), then this shard's share of them
        import itertools

        examples = shard.select(itertools.islice(examples, limit) if limit is not None else examples)
        limit = None
    ref = ReferenceTeacherForcedWriter(reference_out) if reference_out else None
    try:
        counts = run_teacher_forcing(
            examples,
            scorer,
            output,
            chat_template=chat_template,
            limit=limit,
            resume=resume,
            chunk_size=chunk,
            progress=progress,
            total=_count_lines(data),
            on_record=ref.write if ref else None,
        )
    finally:
        if ref:
            ref.close()
    click.echo(json.dumps({"output": str(output), **counts}))


@trace.command("generate")
@_data_options
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per prompt.")
@click.option("--seed", type=int, default=None, help="Per-request sampling seed (request i gets seed + i).")
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="vLLM's temperature (leave at 1 when the decoder settings set temperature or edt_var).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A sample_smart decoder setting (DecodeConfig key), e.g. --set min_p=0.1 --set greedy_threshold=0.3.",
)
@click.option("--config-json", default=None, help="Decoder settings as a JSON object (merged under --set).")
@click.option("--stop", "stop_strings", multiple=True, help="Stop TRACING after the first token completing this text.")
@click.option("--stop-regex", default=None, help="Stop tracing after the first token completing a match of this regex.")
@click.option(
    "--trace-after-stop",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also trace this many tokens after the stop match.",
)
@click.option(
    "--logprobs-mode",
    type=click.Choice(["raw_logprobs", "processed_logprobs"]),
    default="raw_logprobs",
    show_default=True,
    help="Engine mode; processed adds each token's processed logprob (raw values kept).",
)
@click.option(
    "--reference-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write low_conf_ranks_<ts>.jsonl and all_sampled_ranks_<ts>.jsonl here.",
)
@click.option(
    "--low-conf-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="low_conf_ranks: ranks at steps with p_max below this.",
)
@click.option(
    "--sampled-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.1,
    show_default=True,
    help="all_sampled_ranks: ranks of sampled tokens with raw probability below this.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Prompts per engine call (and per flush of records).",
)
@cli_errors
def generate(
    data,
    output,
    model,
    top_k,
    progress,
    resume,
    limit,
    chat_template,
    id_field,
    prompt_field,
    target_field,
    max_tokens,
    n,
    seed,
    temperature,
    settings,
    config_json,
    stop_strings,
    stop_regex,
    trace_after_stop,
    logprobs_mode,
    reference_dir,
    low_conf_threshold,
    sampled_threshold,
    batch_size,
    shard,
    **engine,
) -> None:
    """Generate with vLLM and trace each sampled token's raw rank and probability.

    Input lines: {"id": ..., "prompt": ...} (a target field is ignored). Output: one
    sample_smart.generation/1 record per generated sequence.
    """
    from sample_smart import DecodeConfig
    from sample_smart.traces.stop import TraceStop

    cfg_dict: dict = {}
    if config_json:
        try:
            cfg_dict = json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--config-json") from None
        if not isinstance(cfg_dict, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--config-json")
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        cfg_dict[key.strip()] = value.strip()
    try:
        config = DecodeConfig.from_dict(cfg_dict)
        stop = TraceStop.build(stop_strings, stop_regex, trace_after_stop)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set/--config-json/--stop-regex") from None
    overrides = engine_overrides_of(engine)

    from sample_smart.traces.generation_run import run_generation_traces

    counts = run_generation_traces(
        data,
        output,
        model=_model_path(model),
        config=config,
        top_k=top_k,
        n=n,
        max_tokens=max_tokens,
        seed=seed,
        temperature=temperature,
        stop=stop,
        logprobs_mode=logprobs_mode,
        chat_template=chat_template,
        id_field=id_field,
        prompt_field=prompt_field,
        limit=limit,
        resume=resume,
        progress=progress,
        batch_size=batch_size,
        reference_dir=reference_dir,
        low_conf_threshold=low_conf_threshold,
        sampled_threshold=sampled_threshold,
        shard=shard,
        engine_args=overrides,
    )
    click.echo(json.dumps({"output": str(Path(output)), **counts}))
