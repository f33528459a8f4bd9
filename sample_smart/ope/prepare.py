"""Phase 1 of OPE: log responses of pi_0, teacher-force them under every target, judge them.

``prepare(spec)`` writes into ``spec.output_dir``:

* ``run.json``: the settings, the policies, the judge, the conventions and ``run_key`` (a hash of
  the settings; a rerun with other settings is refused, the same settings resume);
* ``records.jsonl``: one :data:`~sample_smart.ope.records.RECORD_SCHEMA` record per
  (prompt, sample index), written with :class:`~sample_smart.traces.writer.TraceWriter` (a crash
  loses at most the line being written);
* ``oracle.jsonl`` (``oracle_samples > 0``): every target decoder actually run on the same prompts,
  ``oracle_samples`` responses each, judged and labelled (:data:`ORACLE_SCHEMA`).

Generation: vLLM (``make_llm(**engine_overrides)``, the engine in a subprocess unless
``VLLM_ENABLE_V1_MULTIPROCESSING`` says otherwise), one request per (prompt, sample) with a seed
``derive_seed(seed, sample, policy|prompt_id)``, prompts in **fixed chunks** of ``CHUNK`` prompts
(the same batch composition on every run), so a resumed run regenerates the unfinished chunk
identically and writes only the missing records: resumed == uninterrupted. Teacher forcing: see
:mod:`.teacher_force`. Labels: the task's answer regex and exact match, as ``sample-smart eval``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sample_smart.ope.policies import LOGGING, Policy, build_policies
from sample_smart.ope.records import ORACLE_SCHEMA, RECORD_SCHEMA, done_keys, encode_logp

CHUNK = 8
DEFAULT_MAX_MODEL_LEN = 1024


@dataclass
class PrepareSpec:
    """Settings of one run (``sample-smart ope prepare --help``)."""

    output_dir: str
    task: str = "arith_mini"
    data_dir: str | None = None
    limit: int = 40
    responses: int = 2
    seed: int = 0
    max_gen_toks: int | None = None
    logging: Mapping[str, Any] | None = None
    targets: Mapping[str, Any] = field(default_factory=dict)
    oracle_samples: int = 0
    model: str | None = None

    def check(self) -> None:
        for name, lo in (("limit", 1), ("responses", 1), ("oracle_samples", 0), ("seed", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}={v!r} is invalid: allowed an integer >= {lo}")
        if self.max_gen_toks is not None and (not isinstance(self.max_gen_toks, int) or self.max_gen_toks < 1):
            raise ValueError(f"max_gen_toks={self.max_gen_toks!r} is invalid: allowed an integer >= 1")


@dataclass(frozen=True)
class TaskPrompt:
    prompt_id: str
    text: str  # the full (few-shot) prompt
    question: str  # the question alone (doc_to_text), for the judge
    gold: str | None
    until: tuple[str, ...]
    max_gen_toks: int


def load_prompts(task: str, data_dir: str | None, limit: int) -> tuple[list[TaskPrompt], tuple[str | None, int]]:
    """The first ``limit`` prompts of ``task`` through lm-eval (as ``sample-smart eval`` builds them)
    and the task's answer regex ``(pattern, group)``."""
    from sample_smart.analysis.metrics import normalize_answer
    from sample_smart.integrations.lm_eval_runner import EvalSpec, _regex_of, check_task, load_tasks

    check_task(task, data_dir)
    _, tasks = load_tasks(EvalSpec(task=task, data_dir=data_dir))
    if len(tasks) != 1:
        raise ValueError(f"task {task!r} is a group of {len(tasks)} tasks; give one task")
    name, t = next(iter(tasks.items()))
    if t.get_config("output_type") != "generate_until":
        raise ValueError(f"task {task!r} is not a generation task (output_type generate_until)")
    t.build_all_requests(limit=limit)
    out = []
    for inst in t.instances:
        context, gen = inst.args[0], dict(inst.args[1] or {})
        until = gen.get("until") or []
        out.append(
            TaskPrompt(
                prompt_id=f"{name}:{inst.doc_id}",
                text=context,
                question=t.doc_to_text(inst.doc),
                gold=normalize_answer(t.doc_to_target(inst.doc)),
                until=tuple([until] if isinstance(until, str) else until),
                max_gen_toks=int(gen.get("max_gen_toks", 256)),
            )
        )
    return out, _regex_of(t)


def _request(policy: Policy, max_tokens: int, stop: tuple[str, ...], seed: int):
    """vLLM SamplingParams of one sample of ``policy`` (greedy decoders run with vLLM's greedy)."""
    from sample_smart.integrations.vllm import sampling_params

    greedy = policy.decoder.is_greedy
    return sampling_params(
        None if greedy else policy.decoder,
        temperature=0.0 if greedy else 1.0,
        max_tokens=max_tokens,
        stop=list(stop) or None,
        seed=None if greedy else seed,
    )


def _cut(text: str, stops: tuple[str, ...]) -> str:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else text


class _Runner:
    """What one run holds: engine, forcer, judge, tokenizer, prompts and the label rule."""

    def __init__(self, spec: PrepareSpec, llm: Any, forcer: Any, regex: tuple[str | None, int]):
        from sample_smart.ope.judge import Judge

        self.spec, self.llm, self.forcer, self.regex = spec, llm, forcer, regex
        self.tokenizer = forcer.tokenizer
        self.judge = Judge(forcer.model, forcer.tokenizer)

    def prompt_ids(self, policy: Policy, p: TaskPrompt) -> list[int]:
        return list(self.tokenizer(policy.prompt(p.text))["input_ids"])

    def max_tokens(self, p: TaskPrompt) -> int:
        return int(self.spec.max_gen_toks or p.max_gen_toks)

    def generate(self, policy: Policy, chunk: list[TaskPrompt], n: int) -> dict[tuple[str, int], list[int]]:
        """``{(prompt_id, k): token ids}``: one vLLM call for the whole chunk (fixed composition)."""
        from vllm.inputs import TokensPrompt

        from sample_smart.integrations.lm_eval import derive_seed

        prompts, params, keys = [], [], []
        for p in chunk:
            ids = self.prompt_ids(policy, p)
            for k in range(n):
                seed = derive_seed(self.spec.seed, k, f"{policy.name}|{p.prompt_id}")
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(_request(policy, self.max_tokens(p), p.until, seed))
                keys.append((p.prompt_id, k))
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return {key: list(o.outputs[0].token_ids) for key, o in zip(keys, outs)}

    def label(self, p: TaskPrompt, token_ids: list[int]) -> dict[str, Any]:
        from sample_smart.analysis.metrics import extract_answer, normalize_answer

        text = _cut(self.tokenizer.decode(token_ids, skip_special_tokens=True), p.until)
        answer = normalize_answer(extract_answer(text, *self.regex))
        return {"response": text, "answer": answer, "oracle_label": bool(answer is not None and answer == p.gold)}

    def write_judged(self, writer: Any, p: TaskPrompt, batch: list[dict]) -> int:
        """Judge the records of one prompt (one forward pass) and write them; returns how many."""
        for rec, fields in zip(batch, self.judge.score_many([(p.question, r["response"]) for r in batch])):
            rec.update(fields)
            writer.write(rec)
        return len(batch)


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` next to ``path`` and rename it into place (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


def run_key(spec: PrepareSpec, pi0: Policy, targets: Mapping[str, Policy], model: str) -> str:
    # oracle_samples is not part of it: the logged records do not depend on it, and a rerun with
    # more oracle samples adds the missing ones
    skip = ("output_dir", "logging", "targets", "model", "oracle_samples")
    settings = {k: v for k, v in asdict(spec).items() if k not in skip}
    settings["policies"] = {LOGGING: pi0.describe(), **{n: p.describe() for n, p in targets.items()}}
    settings["model"] = model
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare(
    spec: PrepareSpec,
    *,
    engine_overrides: dict | None = None,
    llm: Any = None,
    forcer: Any = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) phase 1 (module doc); returns the run summary (also in ``run.json``).
    ``llm``/``forcer`` reuse a loaded engine / teacher forcer (else made here: ``make_llm(model,
    **engine_overrides)``, default ``max_model_len`` 1024, and :func:`.teacher_force.load_forcer`)."""
    from sample_smart.ope.teacher_force import common_prefix, load_forcer, processed_logprobs
    from sample_smart.traces.writer import TraceWriter

    say = progress or (lambda msg: None)
    spec.check()
    pi0, targets = build_policies(spec.logging, spec.targets)
    out = Path(spec.output_dir)
    t0 = time.perf_counter()
    prompts, regex = load_prompts(spec.task, spec.data_dir, spec.limit)
    if forcer is None:
        forcer = load_forcer(spec.model)
    key = run_key(spec, pi0, targets, str(spec.model or "embedded"))
    out.mkdir(parents=True, exist_ok=True)
    run_path = out / "run.json"
    summary = {
        "schema": "sample_smart.ope_run/1",
        "run_key": key,
        "settings": {k: v for k, v in asdict(spec).items() if k not in ("logging", "targets")},
        "logging_policy": pi0.describe(),
        "targets": {n: p.describe() for n, p in targets.items()},
        "conventions": {
            "logprob": "natural log of the PROCESSED distribution of the policy (temperature + truncation), "
            "summed over the response tokens; '-inf' when a token is outside the kept set",
            "teacher_forcing": "transformers fp32 CPU, batch size 1, the prompt token ids vLLM was given",
            "oracle_label": "exact match of the task's answer regex, as sample-smart eval",
        },
    }
    if run_path.exists():
        old = json.loads(run_path.read_text())
        if old.get("run_key") != key:
            raise ValueError(f"{run_path}: another run's settings are in this folder; use another --output-dir")
    if llm is None:
        from sample_smart.integrations.vllm_engine import make_llm

        # the engine in its own process: its CPU worker pins threads and disables
        # torch.set_num_threads in the process it runs in (see teacher_force.fixed_threads)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")

        overrides = {"max_model_len": DEFAULT_MAX_MODEL_LEN, **(engine_overrides or {})}
        llm = make_llm(spec.model, **overrides)
    from sample_smart.ope.judge import Judge

    summary["judge"] = Judge(forcer.model, forcer.tokenizer).describe()
    _write_json(run_path, summary)
    runner = _Runner(spec, llm, forcer, regex)
    chunks = [prompts[i : i + CHUNK] for i in range(0, len(prompts), CHUNK)]

    # ---- logged records
    rec_path = out / "records.jsonl"
    done = done_keys(rec_path, RECORD_SCHEMA, key)
    by_prompt: dict[str | None, list[Policy]] = {}
    for pol in [pi0, *targets.values()]:
        by_prompt.setdefault(pol.system_prompt, []).append(pol)
    for pols in by_prompt.values():  # the few-shot prefix every prompt of a variant starts with
        forcer.add_prefix(common_prefix([runner.prompt_ids(pols[0], p) for p in prompts]))
    n_new = 0
    with TraceWriter(rec_path) as w:
        for ci, chunk in enumerate(chunks):
            todo = [(p, k) for p in chunk for k in range(spec.responses) if (p.prompt_id, k) not in done]
            if not todo:
                continue
            say(f"logged chunk {ci + 1}/{len(chunks)}: {len(todo)} responses")
            sampled = runner.generate(pi0, chunk, spec.responses)
            for p in chunk:
                batch = []
                for k in [k for q, k in todo if q is p]:
                    ids = sampled[(p.prompt_id, k)]
                    logps: dict[str, tuple[float, int]] = {}
                    for pols in by_prompt.values():
                        rows = forcer.logits(runner.prompt_ids(pols[0], p), ids)
                        logps.update(processed_logprobs(rows, ids, {q.name: q.decoder for q in pols}))
                    batch.append(
                        {
                            "schema": RECORD_SCHEMA,
                            "run_key": key,
                            "prompt_id": p.prompt_id,
                            "sample_index": k,
                            "prompt": p.text,
                            "question": p.question,
                            "gold": p.gold,
                            **runner.label(p, ids),
                            "response_token_ids": ids,
                            "prompt_token_ids": runner.prompt_ids(pi0, p),
                            "total_logprob": encode_logp(logps[LOGGING][0]),
                            "target_logps": {n: encode_logp(logps[n][0]) for n in targets},
                            "n_outside": {n: logps[n][1] for n in targets},
                            "n_tokens": len(ids),
                        }
                    )
                n_new += runner.write_judged(w, p, batch)

    # ---- oracle: every target decoder actually run
    n_oracle = 0
    if spec.oracle_samples:
        orc_path = out / "oracle.jsonl"
        done_o = done_keys(orc_path, ORACLE_SCHEMA, key)
        with TraceWriter(orc_path) as w:
            for name, pol in targets.items():
                for ci, chunk in enumerate(chunks):
                    todo = [
                        (p, k)
                        for p in chunk
                        for k in range(spec.oracle_samples)
                        if (name, p.prompt_id, k) not in done_o
                    ]
                    if not todo:
                        continue
                    say(f"oracle {name} chunk {ci + 1}/{len(chunks)}: {len(todo)} responses")
                    sampled = runner.generate(pol, chunk, spec.oracle_samples)
                    for p in chunk:
                        batch = []
                        for k in [k for q, k in todo if q is p]:
                            ids = sampled[(p.prompt_id, k)]
                            batch.append(
                                {
                                    "schema": ORACLE_SCHEMA,
                                    "run_key": key,
                                    "policy": name,
                                    "prompt_id": p.prompt_id,
                                    "sample_index": k,
                                    **runner.label(p, ids),
                                    "response_token_ids": ids,
                                }
                            )
                        n_oracle += runner.write_judged(w, p, batch)
    summary["last_call"] = {
        "new_records": n_new,
        "new_oracle_records": n_oracle,
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    _write_json(run_path, summary)
    return summary


__all__ = ["PrepareSpec", "TaskPrompt", "load_prompts", "prepare"]
