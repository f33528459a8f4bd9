"""Decision-token probabilities of any checkpoint over a JSONL file (transformers backend).

Input lines: ``{"id": ..., "prompt": str | chat messages, "target": str (optional), "gt": class (optional)}``
(field names configurable). The answer position (conventions: :mod:`sample_smart.analysis.decision`):

* with a ``target`` (the reply, e.g. ``"\\boxed{Accept}"``): prompt and target are tokenised with
  an exact boundary (:func:`sample_smart.traces.examples.encode_example`) and the position is
  searched backwards over the target tokens, as the training callback does; the gold class is
  the ``gt`` field when present, else the class of the label token found;
* without one: the position right after the prompt plus ``answer_prefix`` (e.g. ``"\\boxed{"``),
  i.e. the next token the model would generate; the gold class is the ``gt`` field (or none).

Output lines (schema ``sample_smart.decision/1``): ``{"sample_id", "model", "step", "answer_pos",
"p_<class>"..., "mass", "confidence", "confidence_renorm", "gt", "pred", "correct"}``; an example
whose answer position is not found gets ``"answer_pos": null`` and an ``"error"`` (counted, no
crash). ``step`` is the checkpoint's ``global_step`` from its ``trainer_state.json`` when present.
Resumable as the traces: sample ids already in the output are skipped, the writer is crash-safe.
Every input line is checked before the model loads (errors name ``path:line``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .decision import (
    DECISION_SCHEMA,
    IGNORE_INDEX,
    find_answer_positions,
    probs_at,
    record_fields,
    resolve_label_tokens,
)


def _read_inputs(
    path: str | os.PathLike,
    classes: Sequence[str],
    *,
    id_field: str,
    prompt_field: str,
    target_field: str,
    gt_field: str,
) -> list[dict[str, Any]]:
    from sample_smart.traces.reader import TraceFormatError, read_jsonl

    rows, seen = [], set()
    index = -1
    for lineno, rec in read_jsonl(path):
        index += 1
        try:
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            if prompt_field not in rec:
                raise ValueError(f"missing field {prompt_field!r} (fields present: {sorted(rec)})")
            prompt = rec[prompt_field]
            if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt))):
                raise ValueError(f"field {prompt_field!r} must be a string or a list of chat messages")
            target = rec.get(target_field)
            if target is not None and (not isinstance(target, str) or not target):
                raise ValueError(f"field {target_field!r} must be a non-empty string when present")
            gt = rec.get(gt_field)
            if gt is not None and gt not in classes:
                raise ValueError(f"field {gt_field!r} is {gt!r}: allowed one of the label classes {list(classes)}")
            sid = str(rec[id_field]) if rec.get(id_field) is not None else str(index)
            if sid in seen:
                raise ValueError(f"duplicate id {sid!r}; ids key the resume and must be unique")
        except ValueError as exc:
            raise TraceFormatError(path, lineno, str(exc)) from None
        seen.add(sid)
        rows.append({"sample_id": sid, "prompt": prompt, "target": target, "gt": gt, "line": lineno})
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def _done_ids(path: str | os.PathLike) -> set[str]:
    """Sample ids of the complete decision records already in ``path`` (bad lines: warned, redone)."""
    from sample_smart.traces.reader import read_jsonl

    if not Path(path).exists():
        return set()
    return {
        str(r["sample_id"])
        for _, r in read_jsonl(path, on_error="skip")
        if isinstance(r, dict) and r.get("schema") == DECISION_SCHEMA and "sample_id" in r
    }


def checkpoint_step(model: str | os.PathLike) -> int | None:
    """``global_step`` from ``<model>/trainer_state.json``, or None."""
    state = Path(model) / "trainer_state.json"
    if not state.is_file():
        return None
    try:
        step = json.loads(state.read_text()).get("global_step")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{state}: not a trainer state (JSON object with global_step)") from None
    return int(step) if isinstance(step, (int, float)) else None


def extract_decisions(
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike,
    labels: Mapping[str, Sequence[str]],
    answer_prefix: str | None = None,
    leading_space: bool = True,
    chat_template: bool = True,
    id_field: str = "id",
    prompt_field: str = "prompt",
    target_field: str = "target",
    gt_field: str = "gt",
    batch_size: int = 8,
    limit: int | None = None,
    resume: bool = True,
    progress: bool = True,
    step: int | None = None,
    device: str | None = None,
) -> dict[str, int]:
    """Score ``data`` with ``model``, append records to ``output`` (module doc); returns counts
    ``{"written", "skipped", "missing"}``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if Path(output).resolve() == Path(data).resolve():
        raise ValueError(f"the output {output} is the input file; choose another output")
    if not resume and Path(output).exists() and Path(output).stat().st_size:
        raise FileExistsError(f"{output} exists; pass resume=True (--resume) to continue it or choose another file")
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sample_smart.traces.examples import encode_target, render_prompt
    from sample_smart.traces.writer import TraceWriter

    tok = AutoTokenizer.from_pretrained(str(model))
    label_tokens = resolve_label_tokens(tok, labels, leading_space=leading_space)
    classes = label_tokens.classes
    rows = _read_inputs(
        data, classes, id_field=id_field, prompt_field=prompt_field, target_field=target_field, gt_field=gt_field
    )[: limit if limit is not None else None]
    step = checkpoint_step(model) if step is None else step
    done = _done_ids(output) if resume else set()
    todo = [r for r in rows if r["sample_id"] not in done]
    prefix_ids = encode_target(tok, answer_prefix) if answer_prefix else []
    encoded = []
    for r in todo:  # tokenise everything before the model loads: a bad example fails fast
        try:
            p_ids = render_prompt(tok, r["prompt"], chat_template=chat_template)
            t_ids = encode_target(tok, r["target"]) if r["target"] is not None else prefix_ids
        except ValueError as exc:
            raise ValueError(f"{data}:{r['line']}: example {r['sample_id']!r}: {exc}") from None
        encoded.append((r, p_ids, t_ids))
    counts = {"written": 0, "skipped": len(rows) - len(todo), "missing": 0}
    if not encoded:
        return counts
    from transformers.utils import logging as hf_logging

    bars_on = hf_logging.is_progress_bar_enabled()
    if not progress:  # also silence the weight-loading bar
        hf_logging.disable_progress_bar()
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    finally:
        if bars_on:
            hf_logging.enable_progress_bar()
    dev = torch.device(device) if device else torch.device("cpu")
    lm = lm.to(dev).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    bar = tqdm(total=len(rows), initial=counts["skipped"], disable=not progress, unit="ex", desc="decision extract")
    try:
        with TraceWriter(output) as writer:
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                width = max(len(p) + len(t) for _, p, t in chunk)
                ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
                mask = torch.zeros_like(ids)
                labels_t = torch.full_like(ids, IGNORE_INDEX)
                positions, found_gold = [], []
                for i, (r, p, t) in enumerate(chunk):  # right padding: positions are the unpadded ones
                    seq = p + t
                    ids[i, : len(seq)] = torch.tensor(seq)
                    mask[i, : len(seq)] = 1
                    if r["target"] is not None:
                        labels_t[i, len(p) : len(seq)] = torch.tensor(t)
                if any(r["target"] is not None for r, _, _ in chunk):
                    pos_t, gold_t = find_answer_positions(
                        labels_t, label_tokens, tokenizer=tok, answer_prefix=answer_prefix
                    )
                for i, (r, p, t) in enumerate(chunk):
                    if r["target"] is not None:
                        positions.append(pos_t[i])
                        found_gold.append(gold_t[i])
                    else:
                        positions.append(len(p) + len(t) - 1)
                        found_gold.append(-1)
                probs = probs_at(lm, ids.to(dev), positions, label_tokens, attention_mask=mask.to(dev))
                for i, (r, _, _) in enumerate(chunk):
                    head = {"schema": DECISION_SCHEMA, "sample_id": r["sample_id"], "model": str(model), "step": step}
                    if positions[i] < 0:
                        where = f" after {answer_prefix!r}" if answer_prefix else ""
                        writer.write(
                            {**head, "answer_pos": None, "gt": r["gt"], "error": f"no label token{where} in the target"}
                        )
                        counts["missing"] += 1
                    else:
                        gold = classes.index(r["gt"]) if r["gt"] is not None else found_gold[i]
                        writer.write(
                            {**head, "answer_pos": int(positions[i]), **record_fields(probs[i], gold, classes)}
                        )
                    counts["written"] += 1
                bar.update(len(chunk))
    finally:
        bar.close()
    return counts
