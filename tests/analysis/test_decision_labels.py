"""Label-token resolution, answer positions and class probabilities on the embedded model's real tokenizer.

Only the tokenizer is loaded here (fast); the model runs in test_decision_callback.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sample_smart.analysis.decision import (
    class_probs,
    find_answer_positions,
    parse_label_specs,
    record_fields,
    resolve_label_tokens,
    summarize,
)
from sample_smart.tasks import decision_arith


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from sample_smart.models import require_default_model

    return AutoTokenizer.from_pretrained(str(require_default_model()))


def _first(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"][0]


def test_leading_space_variants_are_distinct_tokens_and_both_kept(tok):
    lt = resolve_label_tokens(tok, {"accept": ["Accept", "accept"], "reject": ["Reject", "reject"]})
    accept = set(lt.class_ids[0])
    expected = {_first(tok, w) for w in ("Accept", " Accept", "accept", " accept")}
    assert len(expected) == 4  # the tokenizer really gives four different tokens
    assert accept == expected
    texts = [t for t, _ in lt.variants[0]]
    assert texts == ["Accept", " Accept", "accept", " accept"]
    bare = resolve_label_tokens(tok, {"accept": ["Accept"], "reject": ["Reject"]}, leading_space=False)
    assert bare.class_ids[0] == (_first(tok, "Accept"),)
    assert _first(tok, " Accept") not in bare.class_ids[0]


def test_multi_token_word_is_scored_by_its_first_token(tok):
    ids = tok("Reject", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the test needs a word the tokenizer splits"
    lt = resolve_label_tokens(tok, {"accept": ["Accept"], "reject": ["Reject"]})
    assert "Reject" in lt.multi_token and "Accept" not in lt.multi_token
    assert ids[0] in lt.class_ids[1] and ids[1] not in lt.class_ids[1]
    assert dict(lt.variants[1])["Reject"] == tuple(ids)
    # p_class is the softmax mass on exactly the first tokens of the class's variants
    logits = torch.randn(3, len(tok))
    p = class_probs(logits, lt)
    soft = torch.softmax(logits.double(), -1)
    for c, class_ids in enumerate(lt.class_ids):
        np.testing.assert_allclose(p[:, c], soft[:, list(class_ids)].sum(-1).numpy(), rtol=1e-5)
    rec = record_fields(p[0], 1, lt.classes)
    assert rec["mass"] == pytest.approx(p[0].sum()) and rec["confidence"] == pytest.approx(p[0].max())
    assert rec["gt"] == "reject" and rec["correct"] == (rec["pred"] == "reject")


@pytest.mark.parametrize(
    "labels, match",
    [
        ({}, "label set is empty"),
        ({"accept": ["Accept"]}, "one class"),
        ({"accept": ["Accept"], "reject": []}, "'reject' has no words"),
        ({"accept": ["Accept"], "reject": ["  "]}, "class 'reject': word '  ' is empty"),
        ({"accept": ["Accept"], "reject": ["Re\ud800"]}, "class 'reject', word .*cannot encode"),
        ({"accept": ["Accept"], "bad-name": ["Reject"]}, "'bad-name'"),
        (
            {"accept": ["Accept"], "reject": ["Acceptable"]},
            "'accept' \\(word 'Accept'\\) and 'reject' \\(word 'Acceptable'\\) share",
        ),
    ],
)
def test_bad_label_sets_are_refused_naming_the_label(tok, labels, match):
    with pytest.raises(ValueError, match=match):
        resolve_label_tokens(tok, labels)


def test_parse_label_specs():
    assert parse_label_specs(["accept=Accept,accept", "reject=Reject"]) == {
        "accept": ["Accept", "accept"],
        "reject": ["Reject"],
    }
    for bad, match in ((["Accept"], "expected CLASS=WORD"), (["a=x", "a=y"], "given twice"), (["=x"], "expected")):
        with pytest.raises(ValueError, match=match):
            parse_label_specs(bad)


def _pad(feats, side, pad_id):
    width = max(len(f["labels"]) for f in feats)
    rows = []
    for f in feats:
        fill = [-100] * (width - len(f["labels"]))
        rows.append(fill + f["labels"] if side == "left" else f["labels"] + fill)
    return torch.tensor(rows)


@pytest.mark.parametrize("side", ["right", "left"])
def test_answer_position_found_in_the_box_for_every_example(tok, side):
    records = decision_arith.generate(12, "test")
    feats = decision_arith.sft_features(tok, records)
    lt = resolve_label_tokens(tok, decision_arith.LABELS)
    labels = _pad(feats, side, tok.pad_token_id)
    pos, gold = find_answer_positions(labels, lt, tokenizer=tok, answer_prefix=decision_arith.ANSWER_PREFIX)
    width = labels.shape[1]
    for i, (f, rec) in enumerate(zip(feats, records)):
        shift = width - len(f["labels"]) if side == "left" else 0
        assert pos[i] >= 0
        assert lt.classes[gold[i]] == rec["gt"]
        j = pos[i] + 1 - shift  # the predicted token, in the unpadded sequence
        assert f["input_ids"][j] == _first(tok, decision_arith.LABELS[rec["gt"]][0])
        assert tok.decode(f["input_ids"][:j]).endswith("<|im_start|>assistant\n\\boxed{")


def test_answer_position_search_is_backwards_and_respects_the_prefix(tok):
    lt = resolve_label_tokens(tok, decision_arith.LABELS)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    late = enc("Reject is tempting. \\boxed{Accept} I accept")
    row = torch.tensor([[-100, -100] + late])
    pos, gold = find_answer_positions(row, lt)  # no prefix: the last label token ("accept" is no label of lt)
    j = pos[0] + 1
    assert lt.classes[gold[0]] == "accept" and row[0, j] == _first(tok, "Accept")
    pos2, gold2 = find_answer_positions(row, lt, tokenizer=tok, answer_prefix="\\boxed{")
    assert pos2 == pos and gold2 == gold
    lt2 = resolve_label_tokens(tok, {"accept": ["Accept", "accept"], "reject": ["Reject"]})
    pos3, _ = find_answer_positions(row, lt2)  # " accept" at the very end is now the last label token
    assert row[0, pos3[0] + 1] == _first(tok, " accept")
    pos4, _ = find_answer_positions(row, lt2, tokenizer=tok, answer_prefix="\\boxed{")
    assert pos4 == pos
    none = torch.tensor([[-100] + enc("no decision here"), [_first(tok, "Accept")] + [-100] * 3])
    assert find_answer_positions(none, lt) == ([-1, -1], [-1, -1])  # index 0 has nothing predicting it
    with pytest.raises(ValueError, match="answer_prefix needs the tokenizer"):
        find_answer_positions(row, lt, answer_prefix="\\boxed{")


def test_summary_uses_named_ece_bins_and_counts_missing():
    from sample_smart.calibration.buckets import ece

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=50)[:, :2]  # some mass outside the two classes
    gold = rng.integers(0, 2, size=50)
    recs = [record_fields(pi, int(g), ("a", "b")) for pi, g in zip(p, gold)]
    s = summarize(recs, ("a", "b"), n_missing=3)
    assert s["n"] == 50 and s["n_missing"] == 3
    assert s["prob_mass"] == pytest.approx(p.sum(1).mean())
    assert s["p_a"] + s["p_b"] == pytest.approx(s["prob_mass"])
    conf = p.max(1)
    correct = p.argmax(1) == gold
    assert s["accuracy"] == pytest.approx(correct.mean())
    assert s["ece"] == pytest.approx(ece(conf, correct, n_bins=10))
    assert s["ece_renorm"] == pytest.approx(ece(conf / p.sum(1), correct, n_bins=10))
    assert s["ece"] != pytest.approx(ece(conf, correct, n_bins=100))  # the bins matter, and they are 10


def test_task_generator_is_seeded_and_balanced():
    a, b = decision_arith.generate(40, "train"), decision_arith.generate(40, "train")
    assert a == b and a != decision_arith.generate(40, "test")
    assert sum(r["gt"] == "accept" for r in a) == 20
    for r in a:
        lhs, shown = r["prompt"].split("?")[0][3:].split(" = ")
        assert (eval(lhs) == int(shown)) == (r["gt"] == "accept")  # noqa: S307 (generated digits only)
        assert r["target"] == "\\boxed{%s}" % decision_arith.LABELS[r["gt"]][0]
    with pytest.raises(ValueError, match="n=0 is invalid"):
        decision_arith.generate(0)
    with pytest.raises(ValueError, match="seed='dev' is invalid"):
        decision_arith.generate(3, "dev")
