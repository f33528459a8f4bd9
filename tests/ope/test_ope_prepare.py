"""Phase 1 and 2 on the embedded model: clone weight 1, determinism, resume == uninterrupted.

One tiny run (2 arith_mini prompts x 2 responses of 12 tokens, oracle 1 sample per target) with
the session's vLLM engine and one teacher forcer for the module; the resume test copies the run,
cuts it mid-line (a crash) and reruns it.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
import torch

from sample_smart.config import DecodeConfig
from sample_smart.ope.analyze import analyze
from sample_smart.ope.prepare import PrepareSpec, prepare
from sample_smart.ope.records import read_records
from sample_smart.ope.teacher_force import common_prefix, load_forcer, processed_logprobs

TARGETS = {
    "t_0.7": {"temperature": 0.7},
    "min_p_0.1": {"min_p": 0.1},
    "pi_bad": {"system_prompt": "Answer with a random number."},
}


@pytest.fixture(scope="module")
def forcer():
    return load_forcer()


def spec_for(path) -> PrepareSpec:
    return PrepareSpec(
        output_dir=str(path), limit=2, responses=2, max_gen_toks=12, targets=TARGETS, oracle_samples=1, seed=3
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, llm, forcer):
    out = tmp_path_factory.mktemp("ope") / "run"
    prepare(spec_for(out), llm=llm, forcer=forcer)
    return out


def test_clone_weight_is_one_and_truncation_zeros_are_counted(run):
    recs = read_records(run / "records.jsonl")
    assert len(recs) == 4 and {r["sample_index"] for r in recs} == {0, 1}
    for r in recs:
        assert abs(r["target_logps"]["pi_clone"] - r["total_logprob"]) <= 1e-6
        assert r["target_logps"]["pi_bad"] != r["total_logprob"]  # its own forward pass, another prompt
        for pol, n_out in r["n_outside"].items():
            assert (r["target_logps"][pol] == "-inf") == (n_out > 0)
        assert 0 <= r["judge_score"] <= 1 and 0 < r["judge_mass"] <= 1
    result = analyze(run, output_dir=run)
    assert result["policies"]["pi_clone"]["clone_max_abs_log_w"] <= 1e-6
    assert result["policies"]["pi_clone"]["diagnostics"]["ess_pct"] == pytest.approx(100.0)
    assert "truth" in result["policies"]["min_p_0.1"]
    rows = [line for line in (run / "ope_table.md").read_text().splitlines() if line.startswith("| pi_clone |")]
    assert len(rows) == 1  # its diagnostics row
    assert (run / "ope_estimates.png").stat().st_size > 0


def test_teacher_forcing_is_deterministic_and_matches_a_full_forward(run, forcer):
    rec = read_records(run / "records.jsonl")[0]
    p, y = rec["prompt_token_ids"], rec["response_token_ids"]
    a, b = forcer.logits(p, y), forcer.logits(p, y)
    assert torch.equal(a, b)
    with torch.inference_mode():
        full = forcer.model(input_ids=torch.tensor([p + y])).logits[0, len(p) - 1 : len(p) - 1 + len(y)].float()
    assert (full - a).abs().max().item() < 1e-3  # the cached prefix is the same computation up to rounding
    cfg = DecodeConfig(temperature=1.0)
    lp = processed_logprobs(a, y, {"pi_0": cfg, "pi_clone": cfg, "t": DecodeConfig(temperature=0.7)})
    assert lp["pi_0"] == lp["pi_clone"]
    assert lp["pi_0"][0] == pytest.approx(rec["total_logprob"], abs=1e-9)
    # raw log-probabilities by hand: log_softmax of the raw rows (temperature 1 leaves them as they are)
    by_hand = float(torch.log_softmax(a, -1).gather(1, torch.tensor(y)[:, None]).double().sum())
    assert lp["pi_0"][0] == pytest.approx(by_hand, abs=1e-6)
    assert common_prefix([[1, 2, 3], [1, 2, 4]]) == [1, 2] and common_prefix([[1, 2], [1, 2]]) == [1]


def test_resumed_run_equals_uninterrupted(run, tmp_path, llm, forcer):
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    for name in ("records.jsonl", "oracle.jsonl"):
        data = (resumed / name).read_bytes()
        lines = data.splitlines(keepends=True)
        (resumed / name).write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # crash mid-line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torn line is reported and cut
        summary = prepare(spec_for(resumed), llm=llm, forcer=forcer)
    assert summary["last_call"]["new_records"] == 2
    for name in ("records.jsonl", "oracle.jsonl"):
        want = [json.loads(x) for x in (run / name).read_text().splitlines()]
        got = [json.loads(x) for x in (resumed / name).read_text().splitlines()]
        assert got == want, name
    # a second rerun has nothing to do; other settings in the same folder are refused
    assert prepare(spec_for(resumed), llm=llm, forcer=forcer)["last_call"]["new_records"] == 0
    other = spec_for(resumed)
    other.seed = 4
    with pytest.raises(ValueError, match="another run's settings"):
        prepare(other, llm=llm, forcer=forcer)
    assert not math.isnan(analyze(resumed)["policies"]["t_0.7"]["diagnostics"]["ess"])
