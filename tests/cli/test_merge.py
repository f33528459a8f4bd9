"""Sharded runs merge to one run: `sample-smart eval/trace --shard i/n` + `sample-smart merge`.

Real runs on the shared engine (embedded model): arith_mini (4 questions x 2 seeded samples of a
Greedy-Threshold + min-p decoder, traced) and `trace generate` on 4 prompts x 2 seeded sequences,
each once whole and as shards 0/2 and 1/2. The merged shards must equal the whole run: the same
samples, the same metrics (recomputed from the samples), the same traces in the same order (float
logprobs to 1e-4: see ``assert_same_traces``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from sample_smart import DecodeConfig
from sample_smart.cli import main
from sample_smart.shards import Shard, shard_of

pytestmark = pytest.mark.engine

LIMIT, REPEATS, TOKENS = 4, 2, 24  # 4-shot prompts: prefill dominates
DECODER = {"greedy_threshold": 0.3, "min_p": 0.05, "temperature": 1.0}
PROMPTS = ["2+2=", "The capital of Italy is", "def add(a, b):", "Count to five:"]


def _lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def assert_same_traces(got, want):
    """The same records in the same order: every field equal but vLLM's per-engine request_id, and
    the float per-step arrays equal to 1e-4 (vLLM on CPU is not batch-invariant: a shard batches
    fewer prompts, and the kernels' rounding moves logprobs by ~1e-6; tokens and ranks do not move)."""
    from sample_smart.traces.schemas import GENERATION_FIELDS

    floats = {f.name for f in GENERATION_FIELDS if f.is_float}
    assert [(r["prompt_id"], r["sample_index"]) for r in got] == [(r["prompt_id"], r["sample_index"]) for r in want]
    for a, b in zip(got, want):
        strip = lambda r: {k: v for k, v in r.items() if k != "request_id" and k not in floats}
        assert strip(a) == strip(b), a["prompt_id"]
        for name in floats:
            assert np.allclose(np.array(a[name], dtype=float), np.array(b[name], dtype=float), atol=1e-4), name


@pytest.fixture(scope="module")
def eval_runs(llm, tmp_path_factory):
    """{"whole": metrics, 0: metrics, 1: metrics} of the same eval run, whole and as 2 shards."""
    from sample_smart.integrations.lm_eval import SampleSmartLM
    from sample_smart.integrations.lm_eval_runner import EvalSpec, run_eval

    assert {shard_of(d, 2) for d in range(LIMIT)} == {0, 1}  # both shards hold questions
    lm = SampleSmartLM(llm=llm)
    runs = {}
    for key, shard in [("whole", None), (0, Shard(0, 2)), (1, Shard(1, 2))]:
        spec = EvalSpec(
            task="arith_mini",
            decoder=DecodeConfig.from_dict(DECODER),
            label="gt",
            repeats=REPEATS,
            seed=3,
            limit=LIMIT,
            max_gen_toks=TOKENS,
            output_dir=tmp_path_factory.mktemp(f"eval_{key}"),
            write_traces=True,
            shard=shard,
        )
        runs[key] = run_eval(lm, spec)
    return runs


def test_two_eval_shards_merged_equal_one_run(eval_runs, tmp_path):
    whole, s0, s1 = eval_runs["whole"], eval_runs[0], eval_runs[1]
    ids = lambda m: sorted({s["doc_id"] for s in _lines(m["files"]["samples"])})
    assert ids(s0) == [d for d in range(LIMIT) if shard_of(d, 2) == 0]
    assert ids(s1) == [d for d in range(LIMIT) if shard_of(d, 2) == 1]
    assert s0["shard"]["docs_per_task"] == {"arith_mini": LIMIT}

    result = CliRunner().invoke(
        main, ["merge", "eval", s1["files"]["metrics"], s0["files"]["metrics"], "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["complete"] is True
    merged = json.loads(open(out["files"]["metrics"]).read())
    assert merged["metrics"] == whole["metrics"] and merged["per_task"] == whole["per_task"]
    assert merged["settings"] == {k: v for k, v in whole["settings"].items() if k != "shard"}
    assert _lines(out["files"]["samples"]) == _lines(whole["files"]["samples"])
    assert_same_traces(_lines(out["files"]["traces"]), _lines(whole["files"]["traces"]))
    # the samples really are sampled (not all greedy copies): the check above compares draws
    assert any(s["seed"] is not None for s in _lines(out["files"]["samples"]))


def test_merge_eval_refuses_overlaps_and_reports_gaps(eval_runs, tmp_path):
    s0 = eval_runs[0]
    # the same shard twice, as two different files: an overlap naming both sample files
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for f in ("metrics", "samples", "traces"):
        shutil.copy(s0["files"][f], copy_dir)
    copied = copy_dir / s0["files"]["metrics"].split("/")[-1]
    meta = json.loads(copied.read_text())
    meta["files"] = {k: str(copy_dir / v.split("/")[-1]) for k, v in meta["files"].items()}
    copied.write_text(json.dumps(meta))
    result = CliRunner().invoke(
        main, ["merge", "eval", s0["files"]["metrics"], str(copied), "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "overlap" in result.output and s0["files"]["samples"] in result.output
    assert meta["files"]["samples"] in result.output
    # one shard alone: written, with its gaps reported; --strict refuses
    result = CliRunner().invoke(main, ["merge", "eval", s0["files"]["metrics"], "--output-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    missing = [d for d in range(LIMIT) if shard_of(d, 2) == 1]
    assert "no input for shard(s) [1]" in result.output and str(missing) in result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["complete"] is False and out["metrics"]["n_questions"] == LIMIT - len(missing)
    result = CliRunner().invoke(
        main, ["merge", "eval", s0["files"]["metrics"], "--output-dir", str(tmp_path / "s"), "--strict"]
    )
    assert result.exit_code == 2 and "gaps" in result.output and not list((tmp_path / "s").glob("*_samples.jsonl"))
    # a shard of another run (other seed) is refused by name
    other = json.loads(copied.read_text())
    other["settings"]["seed"] = 4
    copied.write_text(json.dumps(other))
    result = CliRunner().invoke(main, ["merge", "eval", eval_runs[1]["files"]["metrics"], str(copied)])
    assert result.exit_code == 2 and "settings differ in seed" in result.output, result.output


@pytest.fixture(scope="module")
def trace_runs(llm, tmp_path_factory):
    from sample_smart.traces.generation_run import run_generation_traces

    d = tmp_path_factory.mktemp("trace_shards")
    data = d / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    assert {shard_of(f"p{i}", 2) for i in range(len(PROMPTS))} == {0, 1}
    outs = {}
    for key, shard in [("whole", None), (0, Shard(0, 2)), (1, Shard(1, 2))]:
        outs[key] = d / f"traces_{key}.jsonl"
        counts = run_generation_traces(
            data,
            outs[key],
            llm=llm,
            config=DecodeConfig.from_dict(DECODER),
            n=2,
            max_tokens=8,
            seed=11,
            chat_template=False,
            progress=False,
            batch_size=2,
            shard=shard,
        )
        if shard is not None:
            assert counts["other_shards"] + counts["sequences"] // 2 == len(PROMPTS)
    return data, outs


def test_two_trace_shards_merged_equal_one_run(trace_runs, tmp_path):
    data, outs = trace_runs
    merged = tmp_path / "merged.jsonl"
    result = CliRunner().invoke(
        main, ["merge", "traces", str(outs[1]), str(outs[0]), "-o", str(merged), "--data", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["complete"] is True
    assert_same_traces(_lines(merged), _lines(outs["whole"]))
    # never over an input, never over an existing file, never the same input twice
    for bad_out, needle in [(outs[0], "would overwrite the input"), (merged, "exists")]:
        before = bad_out.read_bytes()
        result = CliRunner().invoke(main, ["merge", "traces", str(outs[0]), str(outs[1]), "-o", str(bad_out)])
        assert result.exit_code == 2 and needle in result.output, result.output
        assert bad_out.read_bytes() == before
    result = CliRunner().invoke(main, ["merge", "traces", str(outs[0]), str(outs[0]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "given twice" in result.output
    # the whole run and a shard overlap; a lone shard has gaps
    result = CliRunner().invoke(main, ["merge", "traces", str(outs["whole"]), str(outs[0]), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "overlap" in result.output and str(outs["whole"]) in result.output
    result = CliRunner().invoke(
        main, ["merge", "traces", str(outs[0]), "-o", str(tmp_path / "z"), "--data", str(data), "--strict"]
    )
    missing = [f"p{i}" for i in range(len(PROMPTS)) if shard_of(f"p{i}", 2) == 1]
    assert result.exit_code == 2 and "gaps" in result.output and missing[0] in result.output
    assert not (tmp_path / "z").exists()


def test_shard_flag_is_checked_at_parse_time():
    for bad in ("2/2", "0/0", "-1/3", "a/b", "1"):
        result = CliRunner().invoke(main, ["eval", "--shard", bad])
        assert result.exit_code == 2 and "--shard" in result.output, (bad, result.output)
    ids = [f"q{i}" for i in range(200)]  # n shards cover every id once, whatever the order
    shards = [set(Shard(i, 3).select(ids, key=str)) for i in range(3)]
    assert set.union(*shards) == set(ids) and sum(map(len, shards)) == len(ids)
    assert shards[1] == set(Shard(1, 3).select(reversed(ids), key=str))
