"""DecisionTokenCallback in real transformers Trainer / TRL SFTTrainer runs on the embedded model (CPU).

One model load for the module; a two-step fine-tune of the generated Accept/Reject task
(the short version of docs/decision's proof run) measures at steps 0, 1 (every_n_steps) and 2.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sample_smart.tasks import decision_arith

N_EVAL = 4
KEYS = [
    "p_accept",
    "p_reject",
    "prob_mass",
    "confidence",
    "confidence_renorm",
    "accuracy",
    "ece",
    "ece_renorm",
    "n",
    "n_missing",
]


@pytest.fixture(scope="module")
def lm_tok():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sample_smart.models import require_default_model

    path = str(require_default_model())
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def run(lm_tok, tmp_path_factory):
    from sample_smart.integrations.decision_finetune import run_decision_finetune

    lm, tok = lm_tok
    out = tmp_path_factory.mktemp("decision_run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = run_decision_finetune(
            out,
            model=lm,
            tokenizer=tok,
            n_train=4,
            n_eval=N_EVAL,
            max_steps=2,
            eval_steps=2,
            every_n_steps=1,
            batch_size=2,
            eval_batch_size=N_EVAL,
            learning_rate=5e-5,
            progress=False,
        )
    return out, info


def _decision_entries(state_path):
    hist = json.loads(state_path.read_text())["log_history"]
    return [e for e in hist if any(k.startswith("eval_decision_") for k in e)]


def test_keys_logged_at_every_measurement_with_values_in_range(run):
    out, info = run
    entries = _decision_entries(out / "trainer_state.json")
    assert [e["step"] for e in entries] == [0, 1, 2]  # evaluate, every_n_steps, evaluate
    for e in entries:
        for k in KEYS:
            assert f"eval_decision_{k}" in e, (k, e)
        g = {k: e[f"eval_decision_{k}"] for k in KEYS}
        assert g["n"] == N_EVAL and g["n_missing"] == 0  # the answer position is found for every example
        for k in ("p_accept", "p_reject", "prob_mass", "confidence", "confidence_renorm", "accuracy", "ece"):
            assert 0.0 <= g[k] <= 1.0 + 1e-9, (k, g[k])
        assert g["p_accept"] + g["p_reject"] == pytest.approx(g["prob_mass"], abs=1e-9)
        assert g["confidence"] <= g["prob_mass"] + 1e-12 and g["confidence_renorm"] >= 0.5 - 1e-9
        assert round(g["accuracy"] * N_EVAL, 6) == int(round(g["accuracy"] * N_EVAL))
    # the Trainer's own eval entries sit beside ours at the evaluation steps
    hist = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert {e["step"] for e in hist if "eval_loss" in e} == {0, 2}
    assert [m["step"] for m in info["measurements"]] == [0, 1, 2]
    assert entries[0]["eval_decision_prob_mass"] != entries[-1]["eval_decision_prob_mass"]  # training moved it


def test_jsonl_has_one_line_per_example_and_measurement(run):
    out, _ = run
    recs = [json.loads(line) for line in (out / "decision.jsonl").read_text().splitlines()]
    assert len(recs) == 3 * N_EVAL
    assert [r["event"] for r in recs] == ["evaluate"] * N_EVAL + ["step"] * N_EVAL + ["evaluate"] * N_EVAL
    gold = [r["gt"] for r in decision_arith.generate(N_EVAL, "test")]
    for r in recs:
        assert r["schema"] == "sample_smart.decision/1" and r["answer_pos"] > 0
        assert r["p_accept"] + r["p_reject"] == pytest.approx(r["mass"], abs=1e-12)
        assert r["confidence"] == pytest.approx(max(r["p_accept"], r["p_reject"]))
        assert r["gt"] == gold[int(r["sample_id"])]
        assert r["correct"] == (r["pred"] == r["gt"])


def test_padding_side_does_not_change_the_probabilities(lm_tok):
    from transformers import DataCollatorForSeq2Seq

    from sample_smart.analysis.decision import resolve_label_tokens, score_batch

    lm, tok = lm_tok
    lm.eval()
    feats = decision_arith.sft_features(tok, decision_arith.generate(3, "test"))
    lt = resolve_label_tokens(tok, decision_arith.LABELS)
    got = {}
    for side in ("right", "left"):
        tok.padding_side = side
        batch = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)([dict(f) for f in feats])
        got[side] = score_batch(lm, batch, lt, tokenizer=tok, answer_prefix=decision_arith.ANSWER_PREFIX)
    tok.padding_side = "right"
    width = max(len(f["input_ids"]) for f in feats)
    assert len({len(f["input_ids"]) for f in feats}) > 1, "the test needs rows of different lengths"
    for i, f in enumerate(feats):
        assert got["left"][0][i] == got["right"][0][i] + width - len(f["input_ids"])
    assert got["left"][1] == got["right"][1]
    np.testing.assert_allclose(got["left"][2], got["right"][2], atol=2e-4)


def test_sft_trainer_prompt_completion(lm_tok, tmp_path):
    import datasets
    from trl import SFTConfig, SFTTrainer

    from sample_smart.integrations.transformers import DecisionTokenCallback

    lm, tok = lm_tok
    recs = decision_arith.generate(4, "test")
    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["target"]}],
            }
            for r in recs
        ]
    )
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=4,
        report_to="none",
        use_cpu=True,
        max_length=128,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=lm, args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb = DecisionTokenCallback.attach(trainer, decision_arith.LABELS, answer_prefix=decision_arith.ANSWER_PREFIX)
        metrics = trainer.evaluate()
    entry = _decision_entries_from(trainer.state.log_history)[-1]
    assert entry["eval_decision_n"] == 4 and entry["eval_decision_n_missing"] == 0
    assert metrics["eval_decision_prob_mass"] == entry["eval_decision_prob_mass"]  # also in the returned dict
    assert cb.history[-1]["eval_decision_accuracy"] == entry["eval_decision_accuracy"]


def _decision_entries_from(hist):
    return [e for e in hist if any(k.startswith("eval_decision_") for k in e)]


def _trainer(lm, tok, tmp_path, eval_records):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_eval_batch_size=4,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    feats = decision_arith.sft_features(tok, eval_records)
    return Trainer(
        model=lm,
        args=args,
        train_dataset=feats,
        eval_dataset=feats,
        processing_class=tok,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
    )


def _attached(lm, tok, tmp_path, eval_records):
    from sample_smart.integrations.decision_callback import DecisionTokenCallback

    trainer = _trainer(lm, tok, tmp_path, eval_records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DecisionTokenCallback.attach(trainer, decision_arith.LABELS, answer_prefix=decision_arith.ANSWER_PREFIX)
    return trainer


def test_bad_setups_fail_before_training_and_a_missing_answer_is_counted(lm_tok, tmp_path):
    from sample_smart.integrations.decision_callback import DecisionTokenCallback

    lm, tok = lm_tok
    recs = decision_arith.generate(3, "test")
    # not attached to the trainer: refused at on_train_begin (no optimizer step happens)
    trainer = _trainer(lm, tok, tmp_path, recs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.add_callback(DecisionTokenCallback(tok, decision_arith.LABELS))
    with pytest.raises(RuntimeError, match="needs the trainer"):
        trainer.train()
    assert trainer.state.global_step == 0
    # no eval example holds a label token: an error naming the examples, before any step
    trainer = _attached(lm, tok, tmp_path, [{**r, "target": "\\boxed{Maybe}"} for r in recs])
    with pytest.raises(
        ValueError, match=r"no eval example has a label token after '\\\\boxed\{' .*examples \[0, 1, 2\]"
    ):
        trainer.train()
    assert trainer.state.global_step == 0
    # one example without an answer: counted and named in a warning, the others measured
    trainer = _attached(lm, tok, tmp_path, [recs[0], {**recs[1], "target": "\\boxed{Maybe}"}, recs[2]])
    with pytest.warns(UserWarning, match=r"1 eval example\(s\) without an answer position: \['1'\]"):
        trainer.evaluate()
    entry = _decision_entries_from(trainer.state.log_history)[-1]
    assert entry["eval_decision_n"] == 2 and entry["eval_decision_n_missing"] == 1
    with pytest.raises(ValueError, match="every_n_steps"):
        DecisionTokenCallback(tok, decision_arith.LABELS, every_n_steps=0)


def test_plot_command_writes_figures_and_the_table(run, tmp_path):
    from sample_smart.cli import main

    out, _ = run
    dest = tmp_path / "plots"
    res = CliRunner().invoke(
        main, ["decision", "plot", str(out / "trainer_state.json"), str(out / "decision.jsonl"), "-o", str(dest)]
    )
    assert res.exit_code == 0, res.output
    for name in ("evolution.png", "reliability.png", "confidence_hist.png", "summary.json", "summary.md"):
        assert (dest / name).stat().st_size > 0, name
    summary = json.loads((dest / "summary.json").read_text())
    entries = _decision_entries(out / "trainer_state.json")
    assert [r["step"] for r in summary["rows"]] == [0, 1, 2]
    assert summary["rows"][-1]["prob_mass"] == entries[-1]["eval_decision_prob_mass"]
    assert "10 equal-width bins" in summary["ece_bins"] and "| step |" in res.output
    # never overwrites its own input; a bad input line is one error naming path:line, exit 2
    clash = CliRunner().invoke(main, ["decision", "plot", str(dest / "summary.json"), "-o", str(dest)])
    assert clash.exit_code == 2 and "would be overwritten" in clash.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text((out / "decision.jsonl").read_text().splitlines()[0] + "\n{not json\n")
    res = CliRunner().invoke(main, ["decision", "plot", str(bad), "-o", str(tmp_path / "p2")])
    assert res.exit_code == 2 and f"{bad}:2:" in res.output and "Traceback" not in res.output
