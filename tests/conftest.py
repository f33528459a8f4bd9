"""Shared test set-up: no test may reach a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402 (after the path/environment set-up above)
from engine_fixtures import *  # noqa: E402,F401,F403  (the shared vLLM engine fixture `llm`)


@pytest.fixture(autouse=True)
def _reset_process_switches():
    """Every test starts and ends with the processors' switches read from the environment and no
    served-calibration cache, so a failed assert cannot leak "compiled" (or a registry) into later tests."""
    from sample_smart.calibration import registry
    from sample_smart.processors import set_backend, set_cpu_fast_path

    yield
    set_backend(None)
    set_cpu_fast_path(None)
    registry._registry_for.cache_clear()


# ------------------------------------------------------------------ no silent skips
# A skipped test (for example `pytest.importorskip` of a missing dependency) fails the run,
# unless SAMPLE_SMART_ALLOW_SKIPS=1 is set for local work.
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and os.environ.get("SAMPLE_SMART_ALLOW_SKIPS") != "1":
        print(f"\n{len(_skipped)} test(s) were skipped; skips are failures here: {_skipped[:10]}")
        if session.exitstatus == 0:
            session.exitstatus = 1
