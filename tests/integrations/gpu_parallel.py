"""The processor under tensor and pipeline parallelism: the same tokens as one rank. GPU machines only.

Not part of the default run: the file name does not match ``test_*.py``, so ``pytest`` (and
``scripts/test.sh``) never collects it; on a machine with >= 2 GPUs run it by name::

    SAMPLE_SMART_TP_MODEL=/models/Qwen2.5-0.5B-Instruct \\
        .venv/bin/python -m pytest -q tests/integrations/gpu_parallel.py

Why not here: this machine has no GPU, and on vLLM 0.32's CPU backend neither layout runs with
the embedded model (docs/scaling.md has the errors): TP=2 is refused by vLLM's config check
(SmolLM2-135M has 9 attention heads, not divisible by 2) and PP=2 starts its two workers and
then fails in the first step (``assert self.intermediate_tensors is not None``).

A test skips only when the hardware is missing (fewer than 2 GPUs), with the count in the reason;
tests/conftest.py turns any skip into a failed run unless SAMPLE_SMART_ALLOW_SKIPS=1, so running
this file on a machine without GPUs fails visibly rather than passing silently.

What is compared, each engine in its own child process (one engine per process): greedy-threshold
1.0 (the processor forces the argmax at every step of a temperature-1 seeded request) and a seeded
min-p 0.1 sample, 16 tokens, fp32, parallel layout versus one rank. The embedded model serves
pipeline parallelism (30 layers split in 2); tensor parallelism needs a model whose attention
heads and KV heads divide by 2 (``SAMPLE_SMART_TP_MODEL``, a local folder; the embedded model has 9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine

PROMPTS = ["The capital of France is", "Q: Tom has 3 apples and buys 4 more. How many?\nA:"]
SETTINGS = [{"greedy_threshold": 1.0}, {"min_p": 0.1}]


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _child(model: str, layout: str) -> None:
    from sample_smart.integrations.vllm import sampling_params
    from sample_smart.integrations.vllm_engine import make_llm

    size = {"tp1": {}, "tp2": {"tensor_parallel_size": 2}, "pp2": {"pipeline_parallel_size": 2}}[layout]
    llm = make_llm(None if model == "embedded" else model, dtype="float32", max_model_len=512, **size)
    rows = []
    for j, s in enumerate(SETTINGS):
        params = [sampling_params(s, max_tokens=16, seed=100 * j + i, logprobs=1) for i in range(len(PROMPTS))]
        for out in llm.generate(PROMPTS, params, use_tqdm=False):
            seq = out.outputs[0]
            ranks = [pos[tok].rank for tok, pos in zip(seq.token_ids, seq.logprobs)]  # the sampled token is listed
            rows.append({"settings": s, "tokens": list(seq.token_ids), "raw_ranks": ranks})
    print("RESULT " + json.dumps(rows), flush=True)


def _run(model: str, layout: str):
    proc = subprocess.run(
        [sys.executable, __file__, model, layout], capture_output=True, text=True, timeout=1800, env=dict(os.environ)
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{layout} on {model} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _need_two_gpus() -> None:
    n = _gpus()
    if n < 2:
        pytest.skip(f"needs 2 GPUs; this machine has {n} (see docs/scaling.md for what runs on CPU)")


def _same(one, two) -> None:
    for a, b in zip(one, two):
        if a["settings"] == SETTINGS[0]:  # the processor forced the argmax on every rank
            assert set(b["raw_ranks"]) == {1}, b
        assert a["tokens"] == b["tokens"], (a["settings"], a["tokens"], b["tokens"])


def test_pipeline_parallel_2_gives_the_tokens_of_one_rank():
    _need_two_gpus()
    _same(_run("embedded", "tp1"), _run("embedded", "pp2"))


def test_tensor_parallel_2_gives_the_tokens_of_one_rank():
    _need_two_gpus()
    model = os.environ.get("SAMPLE_SMART_TP_MODEL")
    assert model, "set SAMPLE_SMART_TP_MODEL to a local model whose attention heads divide by 2 (not a hardware gap)"
    _same(_run(model, "tp1"), _run(model, "tp2"))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
