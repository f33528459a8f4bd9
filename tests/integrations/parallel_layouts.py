"""The processor under pipeline and tensor parallelism: the same tokens as one rank.

Not part of the default run (each layout starts an engine of several processes; on this 2-core
CPU a pipeline-parallel engine takes minutes to compile): the file name does not match
``test_*.py``, so ``pytest`` (and ``scripts/test.sh``) never collects it. Run it by name::

    .venv/bin/python -m pytest -q tests/integrations/parallel_layouts.py -k pipeline   # PP=2 only
    SAMPLE_SMART_TP_MODEL=/models/Qwen2.5-0.5B-Instruct \\
        .venv/bin/python -m pytest -q tests/integrations/parallel_layouts.py          # PP=2 and TP=2

Hardware: 2 GPUs, or without a GPU 2 CPU cores (vLLM's CPU backend, one core per rank:
``VLLM_CPU_OMP_THREADS_BIND="0|1"``, ``--distributed-executor-backend mp``). A test skips only
when that hardware is missing, with the count in the reason; tests/conftest.py turns any skip
into a failed run unless SAMPLE_SMART_ALLOW_SKIPS=1, so running this file where it cannot run
fails visibly rather than passing silently.

What is compared, each engine in its own child process (one engine per process): the tokens of
Greedy-Threshold 1.0 (the processor forces the argmax at every step of a temperature-1 seeded
request: every token must have raw rank 1) and of a seeded min-p 0.1 sample, 16 tokens, fp32,
the parallel layout against one rank with make_llm's defaults.

- PP=2 on the embedded model (30 layers, 15 per stage). On vLLM 0.32's CPU backend the engine
  must be compiled (``enforce_eager=False``): with ``enforce_eager=True`` the CPU runner skips the
  warm-up run that allocates the intermediate tensors, and stage 2 fails at its first step
  (``assert self.intermediate_tensors is not None``; docs/scaling.md).
- TP=2 needs a model whose attention and KV heads divide by 2 (``SAMPLE_SMART_TP_MODEL``, a local
  folder): the embedded model has 9 heads, which vLLM refuses for TP=2 on any hardware.
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


def _layout(layout: str) -> dict:
    """make_llm overrides of a layout; on CPU make_llm itself binds one core per rank and compiles
    a pipeline-parallel engine (what this test checks end to end); workers are processes."""
    size = {"tp1": {}, "tp2": {"tensor_parallel_size": 2}, "pp2": {"pipeline_parallel_size": 2}}[layout]
    if size and not _gpus():
        size = {**size, "distributed_executor_backend": "mp"}
    return size


def _child(model: str, layout: str) -> None:
    from sample_smart.integrations.vllm import sampling_params
    from sample_smart.integrations.vllm_engine import make_llm

    llm = make_llm(None if model == "embedded" else model, dtype="float32", max_model_len=512, **_layout(layout))
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


def _need_two_ranks() -> None:
    n = _gpus()
    cores = sorted(os.sched_getaffinity(0))
    if n == 1 or (n == 0 and cores[:2] != [0, 1]):
        pytest.skip(f"needs 2 GPUs, or without a GPU CPU cores 0 and 1; this machine has {n} GPUs, cores {cores}")


def _same(one, two) -> None:
    for a, b in zip(one, two):
        if a["settings"] == SETTINGS[0]:  # the processor forced the argmax on every rank
            assert set(b["raw_ranks"]) == {1}, b
        assert a["tokens"] == b["tokens"], (a["settings"], a["tokens"], b["tokens"])


def test_pipeline_parallel_2_gives_the_tokens_of_one_rank():
    _need_two_ranks()
    _same(_run("embedded", "tp1"), _run("embedded", "pp2"))


def test_tensor_parallel_2_gives_the_tokens_of_one_rank():
    _need_two_ranks()
    model = os.environ.get("SAMPLE_SMART_TP_MODEL")
    assert model, "set SAMPLE_SMART_TP_MODEL to a local model whose attention heads divide by 2 (not a hardware gap)"
    _same(_run(model, "tp1"), _run(model, "tp2"))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
