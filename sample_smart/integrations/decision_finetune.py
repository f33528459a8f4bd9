"""A short, real fine-tuning run that shows the decision-token callback at work.

The embedded model (SmolLM2-135M-Instruct, fp32) is fine-tuned with ``transformers.Trainer``
on the generated binary task :mod:`sample_smart.tasks.decision_arith` ("Is 7 + 5 = 12?" ->
``\\boxed{Accept}`` / ``\\boxed{Reject}``; prompt masked, chat-templated), with
:class:`~sample_smart.integrations.decision_callback.DecisionTokenCallback` measuring the
eval set before training (step 0) and at every evaluation. Written to ``output_dir``:
``trainer_state.json`` (the trainer's state, ``log_history`` holding the ``eval_decision_*``
entries; the step-0 entries, logged before ``train()`` reset the state, are put back first),
``decision.jsonl`` (one line per eval example and measurement), ``run.json`` (the settings and
wall time) and, with ``save_model=True``, the final model in ``final/``.
``sample-smart decision finetune`` runs it; ``sample-smart decision plot`` draws it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sample_smart.tasks import decision_arith


def run_decision_finetune(
    output_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | Any = None,
    tokenizer: Any = None,
    every_n_steps: int | None = None,
    n_train: int = 256,
    n_eval: int = 64,
    max_steps: int = 40,
    eval_steps: int = 10,
    batch_size: int = 8,
    eval_batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 0,
    save_model: bool = False,
    padding_side: str = "right",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune and measure (module doc); returns ``run.json``'s content. ``model``: a folder
    (default: the embedded model) or a loaded causal LM with its ``tokenizer`` (it is trained in
    place); ``every_n_steps``: the callback also measures every N steps between evaluations."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from sample_smart.integrations.decision_callback import DecisionTokenCallback

    for name, value, lo in (
        ("n_train", n_train, 1),
        ("n_eval", n_eval, 1),
        ("max_steps", max_steps, 1),
        ("eval_steps", eval_steps, 1),
        ("batch_size", batch_size, 1),
        ("eval_batch_size", eval_batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}={value!r} is invalid: allowed an integer >= {lo}")
    if not (0.0 < learning_rate < 1.0):
        raise ValueError(f"learning_rate={learning_rate!r} is invalid: allowed (0, 1)")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r} is invalid: allowed 'left' or 'right'")
    out = Path(output_dir)
    jsonl = out / "decision.jsonl"
    if jsonl.exists() and jsonl.stat().st_size:
        raise FileExistsError(f"{jsonl} exists; choose a new output folder (a run never appends to an old one)")
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        from sample_smart.models import require_default_model

        model = require_default_model()
    t0 = time.time()
    if isinstance(model, (str, os.PathLike)):
        tok = AutoTokenizer.from_pretrained(str(model))
        lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    else:
        if tokenizer is None:
            raise ValueError("pass the tokenizer along with a loaded model")
        lm, tok = model, tokenizer
        model = getattr(lm.config, "_name_or_path", type(lm).__name__)
    tok.padding_side = padding_side
    train = decision_arith.sft_features(tok, decision_arith.generate(n_train, "train"))
    test = decision_arith.sft_features(tok, decision_arith.generate(n_eval, "test"))
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=eval_batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        eval_strategy="steps",
        eval_steps=eval_steps,
        logging_steps=eval_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    trainer = Trainer(
        model=lm,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tok,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
    )
    cb = DecisionTokenCallback.attach(
        trainer,
        decision_arith.LABELS,
        answer_prefix=decision_arith.ANSWER_PREFIX,
        jsonl_path=jsonl,
        every_n_steps=every_n_steps,
    )
    t_load = time.time() - t0
    trainer.evaluate()  # step 0: the model before any update
    before = list(trainer.state.log_history)
    trainer.train()  # starts a fresh TrainerState: put the step-0 entries back in front of its log_history
    trainer.state.log_history[:0] = before
    wall = time.time() - t0
    trainer.state.save_to_json(str(out / "trainer_state.json"))
    if save_model:
        trainer.save_model(str(out / "final"))
        (out / "final" / "trainer_state.json").write_text((out / "trainer_state.json").read_text())
    info = {
        "task": "accept_reject_arith (sample_smart.tasks.decision_arith)",
        "model": str(model),
        "n_train": n_train,
        "n_eval": n_eval,
        "max_steps": max_steps,
        "eval_steps": eval_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "lr_scheduler": "constant",
        "seed": seed,
        "padding_side": padding_side,
        "every_n_steps": every_n_steps,
        "labels": cb.label_tokens.describe(),
        "answer_prefix": cb.answer_prefix,
        "wall_time_s": round(wall, 1),
        "load_time_s": round(t_load, 1),
        "torch_threads": torch.get_num_threads(),
        "measurements": cb.history,
    }
    (out / "run.json").write_text(json.dumps(info, indent=1))
    return info
