"""The vLLM processor prepares its programs when the engine starts, and serving requests whose
settings change at every step compiles nothing (the shared engine runs in this process, so the
programs' dynamo cache entries show it) and samples what the eager chain samples."""

from __future__ import annotations

import random
import sys

import pytest
from support import REPO

from sample_smart.processors import plans, set_backend

sys.path.insert(0, str(REPO))
from benchmarks.engine import MIXED_SETTINGS  # noqa: E402 (the repository root on the path first)

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "2 + 2 ="]
# the engine benchmark's mixed stream, plus a top_k above the programs' candidates (the eager finish)
SETTINGS = MIXED_SETTINGS + [{"top_k": 700, "top_a": 0.1}]


@pytest.mark.engine
def test_engine_start_prepares_and_mixed_requests_compile_nothing(llm, llm_processor):
    from sample_smart.integrations.vllm import sampling_params

    assert llm_processor.prepare_seconds is not None  # compiled at engine start, not on a request
    vocab = llm.llm_engine.vllm_config.model_config.get_vocab_size()
    assert plans.Signature(vocab, plans.torch.float32, "cpu", True, True) in plans._prepared
    fallbacks = plans.fallbacks()
    rng = random.Random(0)

    def generate(seed: int):
        params = [
            sampling_params(rng.choice(SETTINGS), max_tokens=5, seed=seed + i, temperature=1.0)
            for i in range(len(PROMPTS))
        ]
        return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]

    before = plans.compiled_programs()
    state = rng.getstate()
    got = [generate(10 * r) for r in range(3)]  # requests end at different steps: the batch's mix changes
    assert plans.compiled_programs() == before, "the processor compiled while serving"
    assert plans.fallbacks() == fallbacks, "a step left the prepared programs (it ran eager)"
    rng.setstate(state)
    set_backend("eager")
    try:
        want = [generate(10 * r) for r in range(3)]
    finally:
        set_backend(None)
    assert got == want
