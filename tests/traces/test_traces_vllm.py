"""vLLM traces on the embedded model: teacher forcing agrees with transformers, generation
ranks are the ranks of the sampled tokens in the raw distribution, stop-of-tracing by text,
reference rank files, and the processed-logprobs path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from traces_data import PAIRS, assert_ranks_agree, plain_logprobs, write_pairs

from sample_smart.integrations.vllm import sampling_params
from sample_smart.models import require_default_model
from sample_smart.traces import iter_generation, iter_teacher_forced, read_jsonl, validate_generation
from sample_smart.traces.examples import encode_example, load_examples, render_prompt
from sample_smart.traces.generation import GenerationPrompt, _replace_with_raw, trace_generations
from sample_smart.traces.generation_run import run_generation_traces
from sample_smart.traces.reference import all_sampled_ranks, low_conf_ranks
from sample_smart.traces.stop import TraceStop
from sample_smart.traces.teacher_forcing import run_teacher_forcing
from sample_smart.traces.vllm_backend import VLLMTeacherForcer

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(require_default_model()), dtype=torch.float32).eval()


def test_vllm_and_transformers_backends_agree_on_gold_ranks(llm, hf_model, tmp_path):
    """vLLM's teacher-forced records against a plain transformers forward pass (fp32 both;
    the transformers backend itself equals that pass: test_traces_teacher_forcing)."""
    data = tmp_path / "d.jsonl"
    write_pairs(data)
    vout = tmp_path / "v.jsonl"
    backend = VLLMTeacherForcer(llm, top_k=20)
    run_teacher_forcing(load_examples(data), backend, vout, chat_template=True, progress=False)
    vrecs = list(iter_teacher_forced(vout))
    assert [r["id"] for r in vrecs] == [f"ex{i}" for i in range(len(PAIRS))]
    ties = 0
    for v, (prompt, target) in zip(vrecs, PAIRS):
        assert v["backend"] == "vllm" and v["entropy_scope"] == "top_k"
        enc = encode_example(backend.tokenizer, load_examples_one(prompt, target), chat_template=True)
        assert v["gold_id"] == enc.target_ids
        lp = plain_logprobs(hf_model, enc.input_ids)[len(enc.prompt_ids) - 1 : -1]
        # different kernels give ~1e-5 differences, so allow exact near-ties
        ties += assert_ranks_agree(v["gold_rank"], v["gold_id"], lp, tol=1e-4)
        gold_lp = lp.gather(1, torch.tensor(enc.target_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(v["gold_logprob"]), gold_lp, atol=1e-3)
        assert torch.allclose(torch.tensor(v["p_max"]), lp.max(-1).values.exp(), atol=1e-3)
        assert torch.allclose(torch.tensor(v["top_logprobs"]), lp.topk(20).values, atol=1e-3)
        # the top-k part of the entropy never exceeds the full entropy
        full = -(lp.exp() * lp).sum(-1)
        assert all(ve <= he + 1e-4 for ve, he in zip(v["entropy"], full.tolist()))
    n = sum(r["n_tokens"] for r in vrecs)
    assert ties <= max(1, n // 50)


def load_examples_one(prompt, target):
    from sample_smart.traces.examples import Example

    return Example("one", prompt, target)


def _prompts(llm, n=3):
    tok = llm.get_tokenizer()
    return [GenerationPrompt(f"p{i}", render_prompt(tok, PAIRS[i][0], chat_template=True)) for i in range(n)]


def test_generation_ranks_are_the_sampled_tokens_ranks_in_the_raw_distribution(llm, hf_model):
    prompts = _prompts(llm)
    # tempered and truncated sampling: the recorded values must still be the RAW ones
    params = sampling_params({"temperature": 1.5, "min_p": 0.02}, max_tokens=16, n=2, seed=7)
    recs = list(trace_generations(llm, prompts, params, top_k=20))
    assert len(recs) == 6
    assert {(r["prompt_id"], r["sample_index"]) for r in recs} == {(f"p{i}", j) for i in range(3) for j in range(2)}
    for rec in recs:
        validate_generation(rec)
        assert rec["logprobs_mode"] == "raw_logprobs" and "processed_logprob" not in rec
        assert rec["config"]["sample_smart"] == {"temperature": 1.5, "min_p": 0.02}
        assert rec["config"]["vllm"]["seed"] == 7 and rec["request_id"]
        assert rec["stop"]["reason"] == "end" and rec["n_tokens"] == rec["n_generated"] > 0
        prompt_ids = next(p.prompt_ids for p in prompts if p.id == rec["prompt_id"])
        ids = prompt_ids + rec["token_id"]
        lp = plain_logprobs(hf_model, ids)[len(prompt_ids) - 1 : -1]
        assert_ranks_agree(rec["rank"], rec["token_id"], lp, tol=1e-4)
        sampled_lp = lp.gather(1, torch.tensor(rec["token_id"])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(rec["logprob"]), sampled_lp, atol=1e-3)
        assert torch.allclose(torch.tensor(rec["p_max"]), lp.max(-1).values.exp(), atol=1e-3)
        assert torch.allclose(torch.tensor(rec["top_logprobs"]), lp.topk(20).values, atol=1e-3)


def test_trace_stops_at_a_stop_string_or_regex_on_decoded_text(llm):
    tok = llm.get_tokenizer()
    ids = tok("Let me think. 2 + 3 = 5. The answer is 5. Done.", add_special_tokens=False)["input_ids"]
    n, info = TraceStop.build(["The answer is"]).cut(tok, ids)
    assert info == {"reason": "stop_string", "match": "The answer is"}
    assert tok.decode(ids[:n]).endswith("The answer is") and "The answer is" not in tok.decode(ids[: n - 1])
    n2, info2 = TraceStop.build(regex=r"answer is \d+").cut(tok, ids)
    assert info2 == {"reason": "regex", "match": "answer is 5"} and tok.decode(ids[:n2]).endswith("answer is 5")
    n3, _ = TraceStop.build(["The answer is"], after=2).cut(tok, ids)
    assert n3 == n + 2
    assert TraceStop.build(["never"]).cut(tok, ids) == (len(ids), {"reason": "end", "match": None})
    # earliest match wins across strings and regex
    n4, info4 = TraceStop.build(["Done"], regex=r"= \d").cut(tok, ids)
    assert info4["reason"] == "regex" and n4 < n
    # in a real generation: the trace ends on the token completing the first "."
    recs = list(
        trace_generations(
            llm, _prompts(llm, 2), sampling_params(None, max_tokens=24, seed=3), top_k=5, stop=TraceStop.build(["."])
        )
    )
    for rec in recs:
        if rec["stop"]["reason"] == "stop_string":
            assert rec["text"].endswith(".") and rec["text"].count(".") == 1
            assert rec["n_tokens"] <= rec["n_generated"]
        else:
            assert "." not in rec["text"] and rec["n_tokens"] == rec["n_generated"]
        assert all(len(r) == len(rec["token_id"]) for r in (rec["rank"], rec["top_ids"]))


def test_run_generation_traces_resume_and_reference_rank_files(llm, tmp_path):
    data = tmp_path / "p.jsonl"
    write_pairs(data, PAIRS[:3])
    out, refdir = tmp_path / "gen.jsonl", tmp_path / "ref"
    kw = dict(
        llm=llm,
        config={"min_p": 0.05},
        top_k=20,
        n=2,
        max_tokens=8,
        seed=11,
        progress=False,
        reference_dir=refdir,
        low_conf_threshold=0.5,
        sampled_threshold=0.3,
    )
    first = run_generation_traces(data, out, limit=2, **kw)
    assert first["sequences"] == 4 and first["skipped_prompts"] == 0
    second = run_generation_traces(data, out, **kw)
    assert second["sequences"] == 2 and second["skipped_prompts"] == 2
    recs = list(iter_generation(out))
    assert [(r["prompt_id"], r["sample_index"]) for r in recs] == [(f"ex{i}", j) for i in range(3) for j in range(2)]
    low_files = sorted(refdir.glob("low_conf_ranks_*.jsonl"))
    all_files = sorted(refdir.glob("all_sampled_ranks_*.jsonl"))
    assert low_files and all_files
    low = [v for f in low_files for _, v in read_jsonl(f)]
    sampled = [v for f in all_files for _, v in read_jsonl(f)]
    assert len(low) == len(sampled) == len(recs)
    for rec, lo, al in zip(recs, low, sampled):
        assert lo == [r for r, p in zip(rec["rank"], rec["p_max"]) if p < 0.5] == low_conf_ranks(rec, 0.5)
        assert al == all_sampled_ranks(rec, 0.3)
        assert all(isinstance(r, int) and r >= 1 for r in lo + al)
    # same seeds per prompt index: a resumed run samples what an uninterrupted one would
    again = tmp_path / "again.jsonl"
    run_generation_traces(data, again, **{**kw, "reference_dir": None})
    assert [r["token_id"] for r in iter_generation(again)] == [r["token_id"] for r in recs]


def test_processed_mode_rescoring_recovers_the_raw_values(llm):
    """The processed-logprobs path re-scores prompt + traced tokens with prompt logprobs;
    on a raw engine that must reproduce the generation's own raw values."""
    prompts = _prompts(llm, 2)
    recs = list(trace_generations(llm, prompts, sampling_params({"min_p": 0.1}, max_tokens=10, seed=5), top_k=20))
    pending = [(dict(r), p, list(r["token_id"])) for r, p in zip(recs, prompts)]
    _replace_with_raw(llm, pending, 20, 512)
    for (new, _, _), old in zip(pending, recs):
        assert new["processed_logprob"] == old["logprob"]
        assert new["token_id"] == old["token_id"]
        assert torch.allclose(torch.tensor(new["logprob"]), torch.tensor(old["logprob"]), atol=1e-3)
        assert sum(a != b for a, b in zip(new["rank"], old["rank"])) <= 1


def test_cli_generate_in_processed_mode(tmp_path):
    """`sample-smart trace generate` end to end in its own process (it starts its own engine
    in processed_logprobs mode, which the shared raw-mode engine cannot serve)."""
    data = tmp_path / "p.jsonl"
    write_pairs(data, PAIRS[:2])
    out, refdir = tmp_path / "gen.jsonl", tmp_path / "ref"
    cmd = [
        sys.executable,
        "-m",
        "sample_smart.cli",
        "trace",
        "generate",
        "--data",
        str(data),
        "-o",
        str(out),
        "--top-k",
        "5",
        "--max-tokens",
        "12",
        "--seed",
        "1",
        "--set",
        "min_p=0.1",
        "--set",
        "temperature=0.7",
        "--logprobs-mode",
        "processed_logprobs",
        "--reference-dir",
        str(refdir),
        "--stop",
        ".",
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["sequences"] == 2
    recs = list(iter_generation(out))
    for rec in recs:
        assert rec["logprobs_mode"] == "processed_logprobs"
        assert rec["config"]["sample_smart"] == {"min_p": 0.1, "temperature": 0.7}
        # sampled from the tempered, truncated distribution; the raw logprob is recorded beside it
        assert len(rec["processed_logprob"]) == rec["n_tokens"]
        assert any(abs(p - r) > 1e-3 for p, r in zip(rec["processed_logprob"], rec["logprob"]))
        assert all(r >= 1 for r in rec["rank"])
    assert len(list(refdir.glob("low_conf_ranks_*.jsonl"))) == 1
