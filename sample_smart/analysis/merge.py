"""Join the outputs of sharded runs (``--shard i/n``, :mod:`sample_smart.shards`) into one result.

* :func:`merge_traces`: trace JSONL files (``sample_smart.generation/1`` keyed by
  ``(prompt_id, sample_index)``, ``sample_smart.teacher_forced/1`` keyed by ``id``) into one file.
  With the data file (``data=``) the records come out in the data file's order (as one unsharded
  run writes them) and missing ids are reported as gaps; without it, in the order of the inputs.
* :func:`merge_eval`: ``sample-smart eval`` runs (their ``*_metrics.json``, which name their
  samples and traces files) into one ``*_metrics.json`` + ``*_samples.jsonl`` (+ traces). The
  metrics are **recomputed from the merged samples** (``question_metrics`` per question, then
  ``summarize``), never averaged over shards; the shards must agree on task, label, model,
  decoder and every setting but the shard; the expected documents are ``0..N-1`` per task (N
  recorded by each shard: its ``--limit`` or the task's size).

Both refuse an overlap (the same key in two inputs, naming both files and the key) and report
gaps (expected ids with no record) in their result; ``strict=True`` refuses gaps instead.
Inputs are never overwritten (``io_checks.refuse_overwrite``), no file is given twice
(``io_checks.distinct_inputs``), and outputs are written next to nothing they read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from sample_smart.io_checks import InputFileError, distinct_inputs, iter_json_lines, read_json_file, refuse_overwrite

__all__ = ["merge_eval", "merge_traces", "record_key"]

EVAL_SCHEMA = "sample_smart.eval/1"
MAX_GAPS_SHOWN = 20


def record_key(rec: dict[str, Any]) -> tuple:
    """The key of a trace record: ``(prompt_id, sample_index)`` (generation) or ``(id,)`` (teacher forced)."""
    from sample_smart.traces.schemas import GENERATION, TEACHER_FORCED

    if rec.get("schema") == GENERATION:
        return (str(rec["prompt_id"]), int(rec["sample_index"]))
    if rec.get("schema") == TEACHER_FORCED:
        return (str(rec["id"]),)
    raise ValueError(f"not a sample_smart trace record (schema {rec.get('schema')!r})")


def _shown(ids: Sequence[Any]) -> str:
    ids = list(ids)
    more = f" and {len(ids) - MAX_GAPS_SHOWN} more" if len(ids) > MAX_GAPS_SHOWN else ""
    return ", ".join(map(str, ids[:MAX_GAPS_SHOWN])) + more


def _write_lines(path: Path, lines: Sequence[bytes]) -> int:
    """Write ``lines`` (each one JSON document without newline) to a fresh ``path``: one line per
    record, flushed per record, so a crash loses at most the line being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "xb") as fh:  # "x": never replace an existing file
        for line in lines:
            fh.write(line + b"\n")
            fh.flush()
            n += len(line) + 1
    return n


# ------------------------------------------------------------------------------ traces
def _read_traces(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[tuple, dict]], str | None]:
    """``[(key, record)]`` of all inputs in order, and their one schema; ValueError on an overlap
    (naming both files) or on mixed schemas."""
    from sample_smart.traces.reader import read_records

    owner: dict[tuple, str] = {}
    out: list[tuple[tuple, dict]] = []
    schema = None
    for path in paths:
        for rec in read_records(path, "raise", validate=True):
            if schema is None:
                schema = rec["schema"]
            elif rec["schema"] != schema:
                raise InputFileError(path, None, f"holds {rec['schema']} records, the other inputs {schema}")
            key = record_key(rec)
            if key in owner:
                raise ValueError(
                    f"overlap: record {'/'.join(map(str, key))} is in both {owner[key]} and {path}; "
                    "shards must be disjoint (was a shard run twice?)"
                )
            owner[key] = str(path)
            out.append((key, rec))
    return out, schema


def merge_traces(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    id_field: str = "id",
    limit: int | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Merge trace files into ``output`` (a new file); return ``{"records", "gaps", "complete", ...}``.

    ``data`` (+ ``id_field``, ``limit`` as the runs used them): the expected prompt ids, in the
    order the unsharded run writes them; ids with no record are ``gaps``."""
    if not inputs:
        raise ValueError("no input files")
    distinct_inputs(inputs)
    checked = list(inputs) + ([data] if data is not None else [])
    refuse_overwrite(output, checked)
    if os.path.exists(output):
        raise FileExistsError(f"{output} exists; merge writes a new file (choose another -o/--output)")
    records, schema = _read_traces(inputs)
    gaps: list[str] = []
    if data is not None:
        from sample_smart.traces.examples import load_examples

        expected = [e.id for e in load_examples(data, id_field=id_field, target_field=None)]
        expected = expected[:limit] if limit is not None else expected
        order = {pid: i for i, pid in enumerate(expected)}
        unknown = [k for k, _ in records if k[0] not in order]
        if unknown:
            raise ValueError(f"records of ids not in {data}: {_shown(sorted({k[0] for k in unknown}))}")
        have = {k[0] for k, _ in records}
        gaps = [pid for pid in expected if pid not in have]
        # the unsharded run writes prompts in data order, the sequences of one prompt by sample index
        records.sort(key=lambda kr: (order[kr[0][0]],) + kr[0][1:])
    if gaps and strict:
        raise ValueError(f"gaps: {len(gaps)} expected ids have no record: {_shown(gaps)}")
    n_bytes = _write_lines(Path(output), [orjson.dumps(rec) for _, rec in records])
    return {
        "output": str(output),
        "schema": schema,
        "records": len(records),
        "inputs": [str(p) for p in inputs],
        "gaps": gaps,
        "complete": None if data is None else not gaps,
        "bytes": n_bytes,
    }


# ------------------------------------------------------------------------------ eval runs
def _resolve(metrics_path: Path, named: str) -> Path:
    """A file named in a metrics JSON: as written (relative to where the run started), else next
    to the metrics file."""
    p = Path(named)
    if p.exists():
        return p
    sibling = metrics_path.parent / p.name
    if sibling.exists():
        return sibling
    raise InputFileError(metrics_path, None, f"names {named}, which exists neither as given nor next to it")


def _load_run(path: Path) -> dict[str, Any]:
    run = read_json_file(path)
    if not isinstance(run, dict) or run.get("schema") != EVAL_SCHEMA:
        raise InputFileError(path, None, f"not a sample-smart eval metrics file (schema {EVAL_SCHEMA})")
    for field in ("task", "label", "model", "decoder", "settings", "files"):
        if field not in run:
            raise InputFileError(path, None, f"missing field {field!r}")
    return run


_SAME = ("task", "label", "model", "decoder")


def _check_same(runs: list[tuple[Path, dict]]) -> None:
    (p0, r0), rest = runs[0], runs[1:]
    strip = lambda s: {k: v for k, v in s.items() if k != "shard"}
    for p, r in rest:
        for field in _SAME:
            if r[field] != r0[field]:
                raise ValueError(f"{p} and {p0} are not shards of one run: {field} {r[field]!r} vs {r0[field]!r}")
        a, b = strip(r["settings"]), strip(r0["settings"])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            raise ValueError(f"{p} and {p0} are not shards of one run: settings differ in {', '.join(diff)}")
        counts = {(x.get("shard") or {}).get("count") for x in (r, r0)}
        if len(counts) > 1:
            raise ValueError(f"{p} and {p0} split the run into different numbers of shards: {sorted(counts, key=str)}")


def merge_eval(
    inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, *, strict: bool = False
) -> dict[str, Any]:
    """Merge ``sample-smart eval`` shard runs (their metrics JSON files) into ``output_dir``;
    return the merged metrics dict (also written, with ``files`` naming what was written)."""
    from sample_smart.analysis.metrics import question_metrics, summarize
    from sample_smart.integrations.lm_eval_runner import _stem

    if not inputs:
        raise ValueError("no input files")
    paths = [Path(p) for p in inputs]
    distinct_inputs(paths)
    runs = [(p, _load_run(p)) for p in paths]
    _check_same(runs)
    samples_files = [_resolve(p, r["files"]["samples"]) for p, r in runs]
    traces_files = [_resolve(p, r["files"]["traces"]) if r["files"].get("traces") else None for p, r in runs]
    if any(t is None for t in traces_files) and any(t is not None for t in traces_files):
        raise ValueError("some shards wrote traces (--write-traces) and others did not")
    distinct_inputs(samples_files + [t for t in traces_files if t is not None])

    # samples: one per (task, doc_id, repeat), none twice
    owner: dict[tuple, Path] = {}
    by_question: dict[tuple[str, int], list[dict]] = {}
    task_order: list[str] = []
    for (mpath, _), spath in zip(runs, samples_files):
        for lineno, s in iter_json_lines(spath):
            try:
                key = (str(s["task"]), int(s["doc_id"]), int(s["repeat"]))
                if "answer" not in s or "gold" not in s:
                    raise KeyError("answer/gold")
            except (KeyError, TypeError, ValueError) as exc:
                raise InputFileError(spath, lineno, f"not a sample-smart eval sample ({exc!r})") from None
            if key in owner:
                raise ValueError(
                    f"overlap: task {key[0]} doc_id {key[1]} repeat {key[2]} is in both {owner[key]} and {spath}"
                )
            owner[key] = spath
            if key[0] not in task_order:
                task_order.append(key[0])
            by_question.setdefault(key[:2], []).append(s)

    # expected documents: 0..N-1 per task, N as recorded by the shards
    universe: dict[str, int] = {}
    shards_seen = []
    for p, r in runs:
        shard = r.get("shard") or {}
        if shard:
            shards_seen.append(int(shard["index"]))
        for task, n in (shard.get("docs_per_task") or {}).items():
            if universe.setdefault(task, int(n)) != int(n):
                raise ValueError(f"{p}: task {task} has {n} documents, another shard says {universe[task]}")
    count = next(((r.get("shard") or {}).get("count") for _, r in runs if r.get("shard")), None)
    missing_shards = sorted(set(range(count)) - set(shards_seen)) if count else []
    dup = sorted({i for i in shards_seen if shards_seen.count(i) > 1})
    if dup:
        raise ValueError(f"shard index {dup} given more than once (overlapping inputs)")
    gaps = {task: [d for d in range(n) if (task, d) not in by_question] for task, n in universe.items()}
    gaps = {t: g for t, g in gaps.items() if g}
    for task in universe:
        if task not in task_order:
            task_order.append(task)
    if gaps and strict:
        shown = "; ".join(f"{t}: doc_id {_shown(g)}" for t, g in gaps.items())
        raise ValueError(f"gaps (shards {missing_shards} missing): {shown}")

    # metrics recomputed from the merged samples, in the order one run scores them
    repeats = runs[0][1]["settings"].get("repeats")
    per_task, all_q, merged = {}, [], []
    for task in task_order:
        docs = sorted(d for t, d in by_question if t == task)
        questions = []
        for d in docs:
            ss = sorted(by_question[(task, d)], key=lambda s: s["repeat"])
            if repeats is not None and [s["repeat"] for s in ss] != list(range(int(repeats))):
                raise ValueError(
                    f"task {task} doc_id {d}: repeats {[s['repeat'] for s in ss]}, expected 0..{repeats - 1}"
                )
            questions.append(question_metrics([s["answer"] for s in ss], ss[0]["gold"]))
            merged.extend(ss)
        if questions:
            per_task[task] = summarize(questions)
            all_q.extend(questions)
    if not all_q:
        raise ValueError("the inputs hold no samples")

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = runs[0][1]
    stem = _stem(out_dir, first["task"], f"{first['label']}_merged")
    files = {"samples": f"{stem}_samples.jsonl", "metrics": f"{stem}_metrics.json"}
    if traces_files[0] is not None:
        files["traces"] = f"{stem}_traces.jsonl"
    every_input = paths + samples_files + [t for t in traces_files if t is not None]
    for f in files.values():
        refuse_overwrite(f, every_input)
    _write_lines(Path(files["samples"]), [orjson.dumps(s) for s in merged])
    if traces_files[0] is not None:
        records, _ = _read_traces(traces_files)
        position = {s["trace_id"]: i for i, s in enumerate(merged) if s.get("trace_id") is not None}
        records.sort(key=lambda kr: (position.get(kr[1].get("prompt_id"), len(position)),) + kr[0])
        _write_lines(Path(files["traces"]), [orjson.dumps(rec) for _, rec in records])
    result = {
        "schema": EVAL_SCHEMA,
        "task": first["task"],
        "label": first["label"],
        "model": first["model"],
        "decoder": first["decoder"],
        "settings": {k: v for k, v in first["settings"].items() if k != "shard"},
        "metrics": summarize(all_q),
        "per_task": per_task,
        "lm_eval_results": None,  # lm-eval's own first-repeat metric is per shard: see "merged_from"
        "wall_time_s": round(sum(float(r.get("wall_time_s") or 0.0) for _, r in runs), 2),
        "shard": None,
        "merged_from": [
            {
                "metrics": str(p),
                "samples": str(s),
                "shard": r.get("shard"),
                "wall_time_s": r.get("wall_time_s"),
                "lm_eval_results": r.get("lm_eval_results"),
            }
            for (p, r), s in zip(runs, samples_files)
        ],
        "gaps": {"missing_shards": missing_shards, "doc_ids": gaps},
        "complete": not gaps and not missing_shards,
        "conventions": {
            **(first.get("conventions") or {}),
            "merge": "metrics recomputed from the merged samples (not averaged over shards); "
            "wall_time_s is the sum over the shards",
        },
        "files": files,
    }
    with open(files["metrics"], "xb") as fh:
        fh.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result
