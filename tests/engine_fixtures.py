"""The test session's one vLLM engine (request the fixture ``llm``).

One ``vllm.LLM`` on the embedded model (SmolLM2-135M-Instruct, fp32), built by
``sample_smart.integrations.vllm_engine.make_llm`` with its CPU settings,
sample_smart's processor registered, vLLM's default ``raw_logprobs`` mode.
Starting it costs ~25 s, so every test that needs an engine shares it; a test that needs
other engine settings starts its engine in a subprocess (never two engines in one process).

Tests using it must leave it as they found it: requests they add through
``llm.llm_engine`` must be finished or aborted before they return.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llm():
    from sample_smart.integrations.vllm_engine import make_llm

    engine = make_llm()
    yield engine
    core = getattr(engine.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


@pytest.fixture(scope="session")
def llm_processor(llm):
    """The SampleSmartLogitsProcessor instance inside ``llm`` (the engine runs in-process)."""
    from sample_smart.integrations.vllm import SampleSmartLogitsProcessor

    proc = SampleSmartLogitsProcessor._engines.get(id(llm.llm_engine.vllm_config))
    assert proc is not None, "the shared engine has no sample_smart processor"
    return proc
