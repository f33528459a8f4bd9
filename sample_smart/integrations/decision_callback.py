"""A transformers ``TrainerCallback`` that watches the decision-token probabilities while a model fine-tunes.

    from sample_smart.integrations.transformers import DecisionTokenCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tok)
    DecisionTokenCallback.attach(trainer, {"accept": ["Accept"], "reject": ["Reject"]},
                                 answer_prefix="\\\\boxed{", jsonl_path="decision.jsonl")
    trainer.train()   # every evaluation logs eval_decision_* (in state.log_history and every report_to)

At each evaluation (and every ``every_n_steps`` training steps when set) it runs a no-grad
forward pass over the trainer's eval dataloader, finds each example's answer position from
its labels and the raw per-class probabilities there (conventions, formulas, ECE bins:
:mod:`sample_smart.analysis.decision`), and logs through ``trainer.log``:

    eval_decision_p_<class>, eval_decision_prob_mass, eval_decision_confidence,
    eval_decision_confidence_renorm, eval_decision_accuracy, eval_decision_ece,
    eval_decision_ece_renorm, eval_decision_n, eval_decision_n_missing

Why the callback holds the trainer: ``Trainer.evaluate`` logs its metrics *before*
``on_evaluate`` runs, so keys added to the ``metrics`` dict there would never reach
``state.log_history`` nor the reporting integrations; ``trainer.log`` puts them in both (a
separate log entry at the same step). The keys are added to ``metrics`` as well, so the dict
``trainer.evaluate()`` returns has them too.

Works with ``Trainer`` and TRL's ``SFTTrainer`` (their eval batches carry ``input_ids`` and
``labels``; packed or padding-free batches, where one row holds several examples, are not
supported: only the last answer of a row would be seen), padding on either side (positions
are absolute), chat-templated data. Distributed: each rank scores its shard, the records are
gathered batch by batch with the trainer's ``accelerator.gather_for_metrics`` (which drops the
examples the distributed sampler repeats to even out the last batch, and keeps dataset order),
or with ``torch.distributed.all_gather_object`` when a process group exists without
accelerate; every rank logs the same numbers (as ``Trainer.evaluate`` does; the integrations
report from the main process only) and only the main process writes the JSONL. Sample ids are
the example's index in the gathered eval stream (the eval dataset's order for the Trainer's
sequential eval sampler; rank-major without accelerate).

Bad input is refused before training starts: the label set when the callback is built
(:func:`~sample_smart.analysis.decision.resolve_label_tokens`), and at ``on_train_begin``
a missing trainer/eval dataset or an eval set where **no** example holds a label token
(the error names the first examples). Examples without an answer position are counted
(``eval_decision_n_missing``), listed once in a warning, and never stop training.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import TrainerCallback

from sample_smart.analysis.decision import (
    DECISION_SCHEMA,
    find_answer_positions,
    record_fields,
    resolve_label_tokens,
    score_batch,
    summarize,
)

__all__ = ["DecisionTokenCallback"]


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DecisionTokenCallback(TrainerCallback):
    """Decision-token probabilities at every evaluation (module doc).

    ``labels``: class -> label words; ``answer_prefix``: only a label token right after this
    text counts (e.g. ``"\\\\boxed{"``); ``every_n_steps``: also measure every N optimizer
    steps (on the eval set, skipped at steps where the trainer evaluates anyway);
    ``jsonl_path``: append one line per example and measurement (crash-safe, as the traces);
    ``metric_key_prefix``: "eval" gives ``eval_decision_*``."""

    def __init__(
        self,
        tokenizer: Any,
        labels: Mapping[str, Sequence[str]],
        *,
        trainer: Any = None,
        answer_prefix: str | None = None,
        leading_space: bool = True,
        every_n_steps: int | None = None,
        jsonl_path: str | os.PathLike | None = None,
        metric_key_prefix: str = "eval",
    ):
        if tokenizer is None:
            raise ValueError("DecisionTokenCallback needs the tokenizer (processing_class) to resolve the label tokens")
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
        ):
            raise ValueError(f"every_n_steps must be None or an int >= 1, got {every_n_steps!r}")
        if answer_prefix is not None and not answer_prefix:
            raise ValueError("answer_prefix must be None or a non-empty string")
        self.tokenizer = tokenizer
        self.label_tokens = resolve_label_tokens(tokenizer, labels, leading_space=leading_space)
        self.classes = self.label_tokens.classes
        self.answer_prefix = answer_prefix
        self.every_n_steps = every_n_steps
        self.jsonl_path = jsonl_path
        self.key = f"{metric_key_prefix}_decision_" if metric_key_prefix else "decision_"
        self.trainer = trainer
        self.history: list[dict[str, float]] = []  # the metrics of every measurement, in order
        self._warned_missing = False
        if self.label_tokens.multi_token:
            warnings.warn(
                f"label variants of several tokens, scored by their first token's probability: "
                f"{list(self.label_tokens.multi_token)}",
                stacklevel=2,
            )

    @classmethod
    def attach(cls, trainer: Any, labels: Mapping[str, Sequence[str]], **kwargs: Any) -> "DecisionTokenCallback":
        """Build a callback from ``trainer.processing_class`` (unless ``tokenizer=`` is given), add it."""
        tokenizer = kwargs.pop("tokenizer", None) or getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        cb = cls(tokenizer, labels, trainer=trainer, **kwargs)
        trainer.add_callback(cb)
        return cb

    # ------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError(
                "DecisionTokenCallback needs the trainer to log its metrics (Trainer.evaluate logs "
                "before on_evaluate): build it with DecisionTokenCallback.attach(trainer, labels) or "
                "trainer=..."
            )
        if self.trainer.eval_dataset is None:
            raise ValueError(
                "DecisionTokenCallback needs an eval_dataset on the trainer (it measures the eval examples)"
            )
        self._preflight(self.trainer.get_eval_dataloader())

    def on_evaluate(self, args, state, control, model=None, eval_dataloader=None, metrics=None, **kwargs):
        if self.trainer is None:
            raise RuntimeError("DecisionTokenCallback is not attached to a trainer: use DecisionTokenCallback.attach")
        logs = self.measure(model, eval_dataloader, state, event="evaluate")
        if metrics is not None:
            metrics.update(logs)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.every_n_steps or state.global_step % self.every_n_steps or control.should_evaluate:
            return
        was_training = model.training
        model.eval()
        try:
            self.measure(model, self.trainer.get_eval_dataloader(), state, event="step")
        finally:
            model.train(was_training)

    # ------------------------------------------------------------ work
    def _preflight(self, dataloader: Any) -> None:
        missing, total = [], 0
        for batch in dataloader:
            if "labels" not in batch:
                raise ValueError(
                    f"the eval batches have no 'labels' (keys {sorted(batch)}); the answer position is "
                    "found from the labels"
                )
            if any(k in batch for k in ("cu_seq_lens_q", "seq_idx")):
                raise ValueError(
                    "the eval batches are packed / padding-free (several examples per row); the decision "
                    "callback needs one example per row: turn off packing and padding_free for eval"
                )
            positions, _ = find_answer_positions(
                batch["labels"].cpu(), self.label_tokens, tokenizer=self.tokenizer, answer_prefix=self.answer_prefix
            )
            missing += [total + i for i, p in enumerate(positions) if p < 0]
            total += len(positions)
        where = f" after {self.answer_prefix!r}" if self.answer_prefix else ""
        if total and len(missing) == total:
            raise ValueError(
                f"no eval example has a label token{where} in its labels (examples {missing[:5]} ...); "
                f"label tokens: {self.label_tokens.describe()['classes']}"
            )
        if missing:
            warnings.warn(
                f"{len(missing)} of {total} eval examples have no label token{where} in their labels "
                f"(examples {missing[:10]}); they are counted as n_missing",
                stacklevel=2,
            )

    def measure(self, model: Any, dataloader: Any, state: Any, *, event: str = "evaluate") -> dict[str, float]:
        """Score every example of ``dataloader``, log the summary through the trainer, return it."""
        rank, world = _world()
        acc = getattr(self.trainer, "accelerator", None)
        per_batch = world > 1 and acc is not None and getattr(acc, "num_processes", 1) == world
        device = next(model.parameters()).device
        rows: list[tuple[int, int, Any]] = []
        for batch in dataloader:
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
            positions, gold, probs = score_batch(
                model, batch, self.label_tokens, tokenizer=self.tokenizer, answer_prefix=self.answer_prefix
            )
            got = [(int(pos), int(g), [float(x) for x in p]) for pos, g, p in zip(positions, gold, probs)]
            if per_batch:  # accelerate: rows in dataset order, the sampler's padding repeats dropped
                got = acc.gather_for_metrics(got, use_gather_object=True)
            rows.extend(got)
        if world > 1 and not per_batch:  # a process group without accelerate: rank-major order
            import torch.distributed as dist

            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part]
        records: list[dict[str, Any]] = []
        missing_ids: list[str] = []
        for index, (pos, g, p) in enumerate(rows):
            if pos < 0:
                missing_ids.append(str(index))
            else:
                records.append(
                    {"sample_id": str(index), "answer_pos": pos, **record_fields(np.asarray(p), g, self.classes)}
                )
        n_missing = len(missing_ids)
        if missing_ids and not self._warned_missing:
            self._warned_missing = True
            warnings.warn(
                f"decision tokens: {n_missing} eval example(s) without an answer position: {missing_ids[:10]}",
                stacklevel=2,
            )
        summary = summarize(records, self.classes, n_missing=n_missing)
        logs = {f"{self.key}{k}": (int(v) if k in ("n", "n_missing") else v) for k, v in summary.items()}
        self.history.append({"step": state.global_step, **logs})
        if self.jsonl_path is not None and rank == 0:
            from sample_smart.traces.writer import TraceWriter

            head = {
                "schema": DECISION_SCHEMA,
                "event": event,
                "step": int(state.global_step),
                "epoch": None if state.epoch is None else float(state.epoch),
            }
            with TraceWriter(self.jsonl_path) as w:
                for rec in records:
                    w.write({**head, **rec})
        self.trainer.log(dict(logs))
        return logs
