"""Teacher forcing with transformers on the embedded model, the exact boundary, the CLI."""

from __future__ import annotations

import math

import orjson
import pytest
import torch
from click.testing import CliRunner
from traces_data import PAIRS, assert_ranks_agree, plain_logprobs, write_pairs

from sample_smart.cli import main
from sample_smart.models import require_default_model
from sample_smart.traces import TraceFormatError, iter_teacher_forced, read_jsonl
from sample_smart.traces.examples import Example, encode_example, load_examples
from sample_smart.traces.teacher_forcing import run_teacher_forcing
from sample_smart.traces.transformers_backend import TransformersTeacherForcer


@pytest.fixture(scope="module")
def hf():
    # batch_size 4 over 6 examples: several micro-batches with real right padding
    return TransformersTeacherForcer(require_default_model(), top_k=20, batch_size=4)


@pytest.fixture(scope="module")
def traced(hf, tmp_path_factory):
    """One teacher-forcing run over PAIRS (chat template), with a weight snapshot before it."""
    tmp = tmp_path_factory.mktemp("tf")
    data, out = tmp / "d.jsonl", tmp / "tf.jsonl"
    write_pairs(data)
    before = {k: v.detach().clone() for k, v in hf.model.state_dict().items()}
    counts = run_teacher_forcing(load_examples(data), hf, out, chat_template=True, progress=False)
    return before, counts, list(iter_teacher_forced(out))


def test_gold_ranks_equal_a_plain_forward_pass(hf, traced):
    _, counts, records = traced
    assert counts["written"] == len(records) == len(PAIRS)
    for rec, (prompt, target) in zip(records, PAIRS):
        enc = encode_example(hf.tokenizer, Example(rec["id"], prompt, target), chat_template=True)
        assert rec["gold_id"] == enc.target_ids and rec["n_tokens"] == len(enc.target_ids)
        lp = plain_logprobs(hf.model, enc.input_ids)[len(enc.prompt_ids) - 1 : -1]
        assert_ranks_agree(rec["gold_rank"], enc.target_ids, lp, tol=1e-5)
        gold_lp = lp.gather(1, torch.tensor(enc.target_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(rec["gold_logprob"]), gold_lp, atol=1e-4)
        assert torch.allclose(torch.tensor(rec["p_max"]), lp.max(-1).values.exp(), atol=1e-5)
        entropy = -(lp.exp() * lp).sum(-1)
        assert torch.allclose(torch.tensor(rec["entropy"]), entropy, atol=1e-4)
        assert rec["entropy_scope"] == "full" and rec["backend"] == "transformers" and rec["log_base"] == "e"
        top_lp = torch.tensor(rec["top_logprobs"])
        assert torch.allclose(top_lp, lp.topk(20).values, atol=1e-4)
        assert torch.allclose(lp.gather(1, torch.tensor(rec["top_ids"])), top_lp, atol=1e-4)


def test_tracing_leaves_the_weights_unchanged(hf, traced):
    before, _, _ = traced
    after = hf.model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    assert not hf.model.training
    assert all(p.grad is None for p in hf.model.parameters())


def test_prompt_target_boundary_is_exact_where_a_merge_crosses_it(hf):
    tok = hf.tokenizer
    prompt, target = "Hello wor", "ld"
    joint = tok(prompt + target, add_special_tokens=False)["input_ids"]
    enc = encode_example(tok, Example("x", prompt, target), chat_template=False)
    # the joint tokenisation merges across the boundary ("wor" + "ld" -> " world") ...
    assert joint != enc.prompt_ids + enc.target_ids
    assert not any(joint[:i] == enc.prompt_ids for i in range(len(joint) + 1))
    # ... while our split keeps every token on its side
    assert tok.decode(enc.prompt_ids) == prompt and tok.decode(enc.target_ids) == target
    # chat rendering: the prompt ends with the assistant header, the target is untouched
    chat = encode_example(tok, Example("x", prompt, target), chat_template=True)
    assert tok.decode(chat.prompt_ids).endswith("<|im_start|>assistant\n")
    assert "Hello wor" in tok.decode(chat.prompt_ids) and chat.target_ids == enc.target_ids


def test_chat_messages_need_the_template(hf):
    msgs = [{"role": "user", "content": "Hi"}]
    enc = encode_example(hf.tokenizer, Example("m", msgs, "Hello!"), chat_template=True)
    assert hf.tokenizer.decode(enc.target_ids) == "Hello!"
    with pytest.raises(ValueError, match="--chat-template"):
        encode_example(hf.tokenizer, Example("m", msgs, "Hello!"), chat_template=False)


def test_resume_limit_and_duplicate_ids(hf, tmp_path):
    data = tmp_path / "d.jsonl"
    pairs = PAIRS[:4]
    write_pairs(data, pairs)
    out = tmp_path / "tf.jsonl"
    first = run_teacher_forcing(load_examples(data), hf, out, chat_template=False, limit=2, progress=False)
    assert first["written"] == 2
    # simulate a crash in the middle of the third record
    line = out.read_bytes().splitlines()[0]
    with open(out, "ab") as f:
        f.write(line[: len(line) // 2])
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        second = run_teacher_forcing(load_examples(data), hf, out, chat_template=False, progress=False)
    assert second == {**second, "written": len(pairs) - 2, "skipped": 2}
    assert [r["id"] for r in iter_teacher_forced(out)] == [f"ex{i}" for i in range(len(pairs))]
    dup = tmp_path / "dup.jsonl"
    write_pairs(dup, PAIRS[:2], ids=["same", "same"])
    with pytest.raises(ValueError, match="duplicate example id 'same'"):
        run_teacher_forcing(load_examples(dup), hf, tmp_path / "o.jsonl", chat_template=False, progress=False)
    with pytest.raises(FileExistsError):
        run_teacher_forcing(load_examples(data), hf, out, chat_template=False, resume=False, progress=False)


def test_bad_input_lines_are_named(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"id": 1, "prompt": "a", "target": "b"}\n{"id": 2, "prompt": "a"}\n')
    with pytest.raises(TraceFormatError, match=r"d.jsonl:2: missing field 'target'"):
        list(load_examples(data))


def test_cli_teacher_force_with_limit_resume_and_reference_format(tmp_path):
    data = tmp_path / "d.jsonl"
    write_pairs(data, PAIRS[:3])
    out, ref = tmp_path / "tf.jsonl", tmp_path / "ref.jsonl"
    args = [
        "trace",
        "teacher-force",
        "--data",
        str(data),
        "--top-k",
        "5",
        "-o",
        str(out),
        "--raw",
        "--reference-out",
        str(ref),
        "--no-progress",
    ]
    runner = CliRunner()
    res = runner.invoke(main, args + ["--limit", "2"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout.strip().splitlines()[-1])["written"] == 2
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert summary["written"] == 1 and summary["skipped"] == 2
    records = list(iter_teacher_forced(out))
    assert [r["id"] for r in records] == ["ex0", "ex1", "ex2"] and all(r["top_k"] == 5 for r in records)
    ref_lines = [v for _, v in read_jsonl(ref)]
    assert len(ref_lines) == sum(r["n_tokens"] for r in records)
    first = records[0]
    assert ref_lines[0]["gt"] == first["gold_id"][0] and ref_lines[0]["top_ids"] == first["top_ids"][0]
    assert [float(p) for p in ref_lines[0]["top_probs"]] == pytest.approx(
        [math.exp(x) for x in first["top_logprobs"][0]], abs=1e-8
    )
    assert all(isinstance(p, str) and len(p.split(".")[1]) == 8 for p in ref_lines[0]["top_probs"])


def test_cli_rejects_bad_options(tmp_path):
    data = tmp_path / "d.jsonl"
    write_pairs(data, PAIRS[:1])
    res = CliRunner().invoke(
        main, ["trace", "teacher-force", "--data", str(data), "-o", str(tmp_path / "o"), "--top-k", "0"]
    )
    assert res.exit_code == 2 and "--top-k" in res.output
    res = CliRunner().invoke(
        main, ["trace", "generate", "--data", str(data), "-o", str(tmp_path / "o"), "--set", "min_p=7"]
    )
    assert res.exit_code == 2 and "min_p" in res.output
    res = CliRunner().invoke(
        main, ["trace", "generate", "--data", str(data), "-o", str(tmp_path / "o"), "--stop-regex", "("]
    )
    assert res.exit_code == 2 and "does not compile" in res.output
