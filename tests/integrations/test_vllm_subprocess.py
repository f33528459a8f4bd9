"""Checks that need an engine with other settings than the shared one, each in a child
process (this file run as a script), so that no process ever holds two engines.

- ``processed``: ``logprobs_mode="processed_logprobs"``: the returned logprobs are those of
  the distribution the token was drawn from, so every token outside the kept set is -inf.
- ``without``: an engine without the processor at all (the entry point plugin not loaded):
  requests without settings must give the same seeded tokens as on the shared engine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Write a short poem about the sea."]
TOP = 8  # logprobs asked per position
TOKENS = 8
PROCESSED_SETTINGS = [None, {"top_k": 3}, {"min_p": 0.2}, {"greedy_threshold": 1.0}, {"top_p": 0.5}]


def _child(mode: str) -> None:
    from sample_smart.integrations.vllm import SampleSmartLogitsProcessor, sampling_params
    from sample_smart.integrations.vllm_engine import make_llm

    if mode == "processed":
        llm = make_llm(logprobs_mode="processed_logprobs")
        result = []
        for j, settings in enumerate(PROCESSED_SETTINGS):
            params = [
                sampling_params(settings, max_tokens=TOKENS, seed=10 * j + i, logprobs=TOP, ignore_eos=True)
                for i in range(len(PROMPTS))
            ]
            for out in llm.generate(PROMPTS, params, use_tqdm=False):
                c = out.outputs[0]
                result.append(
                    {
                        "settings": settings,
                        "tokens": list(c.token_ids),
                        "logprobs": [{str(t): lp.logprob for t, lp in pos.items()} for pos in c.logprobs],
                    }
                )
    elif mode == "without":
        import vllm.v1.sample.logits_processor as lp_loader

        lp_loader._load_logitsprocs_plugins = lambda: []  # the installed entry point is not loaded
        llm = make_llm()
        assert not SampleSmartLogitsProcessor._engines, "the processor was loaded anyway"
        params = [sampling_params(None, max_tokens=16, seed=5 + i) for i in range(len(PROMPTS))]
        result = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(mode: str):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_processed_logprobs_are_minus_inf_outside_the_kept_set():
    rows = _run_child("processed")
    assert len(rows) == len(PROCESSED_SETTINGS) * len(PROMPTS)
    for row in rows:
        s = row["settings"] or {}
        for token, pos in zip(row["tokens"], row["logprobs"]):
            lps = sorted(pos.values(), reverse=True)[:TOP]  # top-TOP (+ the sampled token)
            finite = [v for v in lps if math.isfinite(v)]
            assert math.isfinite(pos[str(token)]), "the sampled token must be in the kept set"
            assert lps[: len(finite)] == finite  # kept tokens rank above the -inf ones
            if not s:
                assert len(finite) == len(lps)  # nothing removed
                continue
            if "top_k" in s:
                assert len(finite) == s["top_k"]
            if "min_p" in s:
                assert all(v >= finite[0] + math.log(s["min_p"]) - 1e-5 for v in finite)
            if "greedy_threshold" in s:
                assert finite == [pytest.approx(0.0, abs=1e-5)]
            if len(finite) < len(lps):  # the whole kept set is listed: it carries all the (renormalised) mass
                assert sum(math.exp(v) for v in finite) == pytest.approx(1.0, abs=1e-4)
    # the settings rows really cut: some position of each has -inf entries
    for settings in PROCESSED_SETTINGS[1:]:
        cut = [r for r in rows if r["settings"] == settings]
        assert any(not math.isfinite(v) for r in cut for pos in r["logprobs"] for v in pos.values())


def test_no_settings_equal_an_engine_without_the_processor(llm):
    from sample_smart.integrations.vllm import sampling_params

    without = _run_child("without")
    params = [sampling_params(None, max_tokens=16, seed=5 + i) for i in range(len(PROMPTS))]
    with_proc = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    assert with_proc == without


if __name__ == "__main__":
    _child(sys.argv[1])
