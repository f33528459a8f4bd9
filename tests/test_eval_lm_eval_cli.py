"""lm-eval's own command line runs the `sample_smart` model (through the registering wrapper).

lm-eval 0.4.13 does not load the ``lm_eval.models`` entry point, so ``lm_eval --model
sample_smart`` alone cannot find the model; ``python -m sample_smart.integrations.lm_eval``
registers it and then runs lm-eval's CLI unchanged. A subprocess, because it starts its own
engine (never two engines in the test process).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sample_smart.tasks import tasks_dir

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_lm_eval_cli_runs_the_sample_smart_model(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "sample_smart.integrations.lm_eval", "run", "--model", "sample_smart",
           "--model_args", "max_model_len=512,seed=5", "--tasks", "arith_mini", "--include_path", str(tasks_dir()),
           "--limit", "2", "--gen_kwargs", "max_gen_toks=24,min_p=0.1,temperature=0.8",
           "--output_path", str(tmp_path), "--log_samples"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results_file] = list(tmp_path.rglob("results_*.json"))
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "sample_smart"
    assert "exact_match,strict-match" in results["results"]["arith_mini"]
    gen = results["configs"]["arith_mini"]["generation_kwargs"]
    assert gen["min_p"] == 0.1 and gen["max_gen_toks"] == 24
    [samples_file] = list(tmp_path.rglob("samples_arith_mini_*.jsonl"))
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["resps"][0][0], str) for r in rows)
