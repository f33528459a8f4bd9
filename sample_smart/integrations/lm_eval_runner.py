"""One evaluation run: an lm-eval task, one decoder, N repeats per question, scored by sample_smart.

``run_eval(lm, spec)`` loads the task through lm-eval's ``TaskManager`` (sample_smart's own
tasks are on the include path; a YAML path adds its folder), sets ``repeats`` and the
decoder's ``generation_kwargs``, runs ``lm_eval.simple_evaluate`` with :class:`SampleSmartLM`
and then scores every repeat itself (lm-eval's own filters keep only the first repeat):

* the answer of each sample is extracted with the task's first ``regex`` filter
  (``filter_list[0]``), normalised by :func:`sample_smart.analysis.metrics.normalize_answer`,
  and compared with the normalised ``doc_to_target``;
* maj@k, pass@k, share correct and distinct answers per question, then run means
  (:mod:`sample_smart.analysis.metrics`).

Files (``<stem> = <task>_<label>_<UTC timestamp>``) in ``spec.output_dir``:

* ``<stem>_samples.jsonl``: one line per (question, repeat): task, doc_id, repeat, seed,
  decoder config, prompt hash, target, response, extracted answer, correct, trace id;
* ``<stem>_metrics.json``: the run's settings, metrics, lm-eval's own first-repeat metric,
  wall time (seconds, generation and scoring) and the file names;
* ``<stem>_traces.jsonl`` with ``write_traces``: one ``sample_smart.generation/1`` record per
  sample (raw ranks and p_max of every generated token), joined by ``trace_id``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sample_smart.analysis.metrics import extract_answer, normalize_answer, question_metrics, summarize
from sample_smart.config import DecodeConfig

__all__ = ["EvalSpec", "check_task", "load_tasks", "run_eval", "task_name_of"]


@dataclass
class EvalSpec:
    """Settings of one run (see ``sample-smart eval --help``)."""

    task: str = "arith_mini"
    decoder: DecodeConfig = field(default_factory=lambda: DecodeConfig(temperature=0.0))
    label: str = "greedy"
    repeats: int = 1
    seed: int = 0
    limit: int | None = None
    max_gen_toks: int | None = None
    num_fewshot: int | None = None
    data_dir: str | None = None
    output_dir: str | os.PathLike = "eval_runs"
    write_traces: bool = False
    apply_chat_template: bool = False
    shard: Any = None  # a sample_smart.shards.Shard: only its documents (limit applies first)


_MANAGERS: dict[tuple, Any] = {}


def _yaml_task_name(path: Path) -> str:
    """The ``task`` (or ``group``) name declared in an lm-eval YAML file (custom tags ignored)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    with open(path) as fh:
        doc = yaml.load(fh, Loader=_Loader) or {}
    name = doc.get("task") if isinstance(doc.get("task"), str) else doc.get("group")
    if not isinstance(name, str):
        raise ValueError(f"--task-config {path}: the YAML declares no 'task' or 'group' name")
    return name


def task_name_of(task: str) -> tuple[str, list[str]]:
    """``(task name, include paths)`` for a task name or a YAML path."""
    from sample_smart.tasks import tasks_dir

    include = [str(tasks_dir())]
    path = Path(task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"--task-config {task}: no such file")
        include.insert(0, str(path.resolve().parent))
        return _yaml_task_name(path), include
    return task, include


def _manager(task: str, data_dir: str | Path | None) -> tuple[Any, str]:
    """``(TaskManager, task name)``; the manager is built once per process and include path."""
    from lm_eval.tasks import TaskManager

    name, include = task_name_of(task)
    metadata = {"data_dir": str(Path(data_dir).resolve())} if data_dir else {}
    key = (tuple(include), tuple(sorted(metadata.items())))
    manager = _MANAGERS.get(key)
    if manager is None:  # indexing lm-eval's task folders takes ~20 s: once per process
        manager = _MANAGERS[key] = TaskManager(include_path=include, metadata=metadata)
    return manager, name


def check_task(task: str, data_dir: str | Path | None = None) -> str:
    """The task name of ``task`` (a name or a YAML path); ValueError when lm-eval (with sample_smart's
    tasks on its include path) knows no such task or group. Cheap after the first call."""
    manager, name = _manager(task, data_dir)
    known = set(manager.all_tasks)
    if name not in known:
        ours = [t for t in ("arith_mini", "gsm8k_fewshot", "bbh_cot_fewshot_mini") if t in known]
        raise ValueError(
            f"unknown task {name!r}: sample_smart's tasks are {', '.join(ours)}; any lm-eval task "
            "name (`python -m lm_eval ls tasks`) or the path of a task YAML also works"
        )
    return name


def load_tasks(spec: EvalSpec) -> tuple[Any, dict[str, Any]]:
    """``(task_manager, {task_name: Task})`` with repeats and generation kwargs applied."""
    manager, name = _manager(spec.task, spec.data_dir)
    tasks = manager.load([name])["tasks"]
    if not tasks:
        raise ValueError(f"task {name!r} resolved to no tasks")
    gen = spec.decoder.to_dict()
    greedy = spec.decoder.is_greedy
    gen["do_sample"] = not greedy
    if not greedy and spec.decoder.temperature is None and spec.decoder.edt_var is None:
        gen["temperature"] = 1.0  # a task YAML's temperature 0 must not turn a sampler greedy
    if spec.max_gen_toks is not None:
        gen["max_gen_toks"] = int(spec.max_gen_toks)
    for task in tasks.values():
        if task.get_config("output_type") != "generate_until":
            continue
        task.set_config(key="repeats", value=int(spec.repeats))
        task.set_config(key="generation_kwargs", value=gen, update=True)
    return manager, tasks


def _regex_of(task: Any) -> tuple[str | None, int]:
    """The first regex filter of the task's first filter pipeline: (pattern, group_select)."""
    for pipeline in task.get_config("filter_list") or []:
        for step in pipeline.get("filter", []):
            if step.get("function") == "regex":
                return step.get("regex_pattern"), int(step.get("group_select", 0))
        break
    return None, 0


def _stem(output_dir: Path, task: str, label: str) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")
    base = output_dir / f"{safe(task)}_{safe(label)}_{stamp}"
    stem, i = base, 1
    while any(stem.parent.glob(stem.name + "_*")):  # never overwrite an earlier run
        stem = base.with_name(f"{base.name}-{i}")
        i += 1
    return stem


def _context_of(sample: dict[str, Any]) -> str:
    args = sample.get("arguments")
    if isinstance(args, dict):  # lm-eval >= 0.4.9: {"gen_args_0": {"arg_0": ctx, "arg_1": kwargs}}
        first = next(iter(args.values()))
        return first["arg_0"]
    return args[0][0]


def run_eval(lm: Any, spec: EvalSpec, progress: Any = None) -> dict[str, Any]:
    """Run ``spec`` with ``lm`` (a :class:`SampleSmartLM`); write the files; return the metrics dict."""
    from lm_eval import simple_evaluate

    say = progress or (lambda msg: None)
    if spec.repeats < 1:
        raise ValueError(f"repeats={spec.repeats} is invalid: allowed an integer >= 1")
    output_dir = Path(spec.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manager, tasks = load_tasks(spec)
    stem = _stem(output_dir, task_name_of(spec.task)[0], spec.label)
    paths = {"samples": f"{stem}_samples.jsonl", "metrics": f"{stem}_metrics.json"}
    if spec.write_traces:
        paths["traces"] = f"{stem}_traces.jsonl"
        lm.open_traces(paths["traces"])
    lm.seed = int(spec.seed)
    lm.generation_log = []
    limit, selection, shard = spec.limit, None, None
    if spec.shard is not None:  # lm-eval takes either a limit or explicit doc ids
        from sample_smart.shards import eval_shard_samples

        selection, universe = eval_shard_samples(tasks, spec.limit, spec.shard)
        limit = None
        shard = {**spec.shard.to_dict(), "docs_per_task": universe, "rule": "sha256(str(doc_id)) mod count"}
    say(f"{spec.label}: {', '.join(tasks)} x {spec.repeats} repeats, decoder {spec.decoder.to_dict()}")
    t0 = time.perf_counter()
    try:
        results = simple_evaluate(
            model=lm,
            tasks=list(tasks.values()),
            task_manager=manager,
            limit=limit,
            samples=selection,
            num_fewshot=spec.num_fewshot,
            log_samples=True,
            bootstrap_iters=0,
            apply_chat_template=spec.apply_chat_template,
            random_seed=spec.seed,
            numpy_random_seed=spec.seed,
            torch_random_seed=spec.seed,
            fewshot_random_seed=1234,
        )
    finally:
        if spec.write_traces:
            lm.close_traces()
    wall = time.perf_counter() - t0

    log = {(e["context_sha1"], e["repeat"]): e for e in lm.generation_log}
    per_task: dict[str, Any] = {}
    all_questions = []
    with open(paths["samples"], "w") as out:
        for task_name, task in tasks.items():
            pattern, group = _regex_of(task)
            questions = []
            for sample in sorted(results["samples"].get(task_name, []), key=lambda s: s["doc_id"]):
                context = _context_of(sample)
                sha = hashlib.sha1(context.encode()).hexdigest()
                responses = (
                    sample["resps"][0] if sample["resps"] and isinstance(sample["resps"][0], list) else sample["resps"]
                )
                gold = normalize_answer(sample["target"])
                answers = [normalize_answer(extract_answer(r, pattern, group)) for r in responses]
                qm = question_metrics(answers, gold)
                questions.append(qm)
                for r, (response, answer, ok) in enumerate(zip(responses, answers, qm["correct"])):
                    entry = log.get((sha, r), {})
                    out.write(
                        json.dumps(
                            {
                                "task": task_name,
                                "doc_id": sample["doc_id"],
                                "repeat": r,
                                "seed": entry.get("seed"),
                                "label": spec.label,
                                "config": entry.get("config", spec.decoder.to_dict()),
                                "prompt_sha1": sha,
                                "target": sample["target"],
                                "gold": gold,
                                "response": response,
                                "answer": answer,
                                "correct": ok,
                                "n_tokens": entry.get("n_tokens"),
                                "trace_id": entry.get("trace_id"),
                                "copy_of_repeat": entry.get("copy_of_repeat"),
                            }
                        )
                        + "\n"
                    )
            per_task[task_name] = summarize(questions)
            all_questions.extend(questions)
    metrics = {
        "schema": "sample_smart.eval/1",
        "task": task_name_of(spec.task)[0],
        "label": spec.label,
        "model": lm.model_name,
        "decoder": spec.decoder.to_dict(),
        "settings": {k: v for k, v in asdict(spec).items() if k not in ("decoder", "output_dir")},
        "metrics": summarize(all_questions),
        "per_task": per_task,
        "lm_eval_results": {
            k: {m: v for m, v in r.items() if isinstance(v, (int, float, str))}
            for k, r in results.get("results", {}).items()
        },
        "wall_time_s": round(wall, 2),
        "shard": shard,
        "conventions": {
            "accuracy": "mean over questions of the share of correct samples",
            "maj_at_k": "majority vote over the first k repeats, ties to the earliest answer",
            "pass_at_k": "unbiased estimator 1 - C(n-c,k)/C(n,k) (Chen et al. 2021)",
            "greedy": "identical greedy repeats are generated once and copied (copy_of_repeat)",
        },
        "files": paths,
    }
    with open(paths["metrics"], "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
