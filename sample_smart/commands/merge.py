"""`sample-smart merge`: join the outputs of sharded runs (``--shard i/n``) into one result.

* ``merge eval METRICS.json...``: ``sample-smart eval`` shards -> one metrics JSON (recomputed
  from the merged samples), samples JSONL and traces JSONL;
* ``merge traces TRACES.jsonl... -o OUT``: ``sample-smart trace generate|teacher-force`` shards
  -> one trace file (in the data file's order with ``--data``).

An overlap (the same example in two inputs) is refused naming both files; gaps (expected
examples with no output) are reported, and refused with ``--strict``. Inputs are never
overwritten. See :mod:`sample_smart.analysis.merge`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sample_smart.io_checks import cli_errors


@click.group()
def merge() -> None:
    """Join the outputs of sharded runs (--shard i/n) into one result, identical to one run."""


def _say(msg: str) -> None:
    click.echo(f"[sample-smart merge] {msg}", err=True)


@merge.command("eval")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval_runs"),
    show_default=True,
    help="Where the merged <task>_<label>_merged_<UTC time>_{metrics.json,samples.jsonl[,traces.jsonl]} go.",
)
@click.option("--strict", is_flag=True, help="Refuse to write when documents or shards are missing (exit 2).")
@cli_errors
def merge_eval_command(inputs: tuple[Path, ...], output_dir: Path, strict: bool) -> None:
    """Merge `sample-smart eval --shard i/n` runs: give every shard's *_metrics.json.

    \b
        sample-smart eval --shard 0/2 --repeats 4 --temperature 1 --output-dir shards   # machine 1
        sample-smart eval --shard 1/2 --repeats 4 --temperature 1 --output-dir shards   # machine 2
        sample-smart merge eval shards/*_metrics.json --output-dir merged
    """
    from sample_smart.analysis.merge import merge_eval

    result = merge_eval(list(inputs), output_dir, strict=strict)
    gaps = result["gaps"]
    if gaps["missing_shards"]:
        _say(f"gap: no input for shard(s) {gaps['missing_shards']}")
    for task, ids in gaps["doc_ids"].items():
        _say(f"gap: task {task}: {len(ids)} document(s) without samples: {ids[:20]}")
    m = result["metrics"]
    _say(f"{len(inputs)} shard(s), {m['n_questions']} questions -> {result['files']['metrics']}")
    click.echo(json.dumps({"complete": result["complete"], "files": result["files"], "metrics": m}))


@merge.command("traces")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="New JSONL file.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The data file the shards read: records in its order, and its missing ids reported as gaps.",
)
@click.option("--id-field", default="id", show_default=True, help="As the shards used it (with --data).")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="As the shards used it (with --data).")
@click.option("--strict", is_flag=True, help="Refuse to write when expected ids are missing (exit 2).")
@cli_errors
def merge_traces_command(
    inputs: tuple[Path, ...], output: Path, data: Path | None, id_field: str, limit: int | None, strict: bool
) -> None:
    """Merge `sample-smart trace ... --shard i/n` outputs into one trace file.

    \b
        sample-smart trace generate --data prompts.jsonl -o t0.jsonl --shard 0/2 --seed 1
        sample-smart trace generate --data prompts.jsonl -o t1.jsonl --shard 1/2 --seed 1
        sample-smart merge traces t0.jsonl t1.jsonl -o traces.jsonl --data prompts.jsonl
    """
    from sample_smart.analysis.merge import merge_traces

    result = merge_traces(list(inputs), output, data=data, id_field=id_field, limit=limit, strict=strict)
    if result["gaps"]:
        _say(f"gap: {len(result['gaps'])} id(s) without records: {result['gaps'][:20]}")
    click.echo(json.dumps(result | {"gaps": len(result["gaps"])}))
