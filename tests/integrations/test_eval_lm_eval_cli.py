"""lm-eval's own command line runs the `sample_smart` model (through the registering wrapper), and
the decoder in ``--gen_kwargs`` really decides what is sampled.

lm-eval 0.4.13 does not load the ``lm_eval.models`` entry point, so ``lm_eval --model
sample_smart`` alone cannot find the model; ``python -m sample_smart.integrations.lm_eval_cli``
registers it and then runs lm-eval's CLI unchanged. A subprocess, because it starts its own
engine (never two engines in the test process).

The decoder check: ``min_p=1.0`` at temperature 1 keeps only the argmax, so every sampled token
must have raw rank 1 in the generation trace; plain sampling at T = 1 from a 135M model picks a
token below the argmax within a few dozen tokens almost surely, so an ignored decoder fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sample_smart.tasks import tasks_dir
from sample_smart.traces.reader import iter_generation

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_lm_eval_cli_runs_the_sample_smart_model(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    trace = tmp_path / "traces.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "sample_smart.integrations.lm_eval_cli",
        "run",
        "--model",
        "sample_smart",
        "--model_args",
        f"max_model_len=512,seed=5,trace_path={trace}",
        "--tasks",
        "arith_mini",
        "--include_path",
        str(tasks_dir()),
        "--limit",
        "3",
        "--gen_kwargs",
        "max_gen_toks=24,min_p=1.0,temperature=1.0",
        "--output_path",
        str(tmp_path),
        "--log_samples",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results_file] = list(tmp_path.rglob("results_*.json"))
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "sample_smart"
    assert "exact_match,strict-match" in results["results"]["arith_mini"]
    [samples_file] = list(tmp_path.rglob("samples_arith_mini_*.jsonl"))
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["resps"][0][0], str) for r in rows)
    records = list(iter_generation(trace))
    ranks = [r for rec in records for r in rec["rank"]]
    assert len(records) == 3 and len(ranks) >= 30, (len(records), len(ranks))
    assert set(ranks) == {1}, "min_p=1.0 must keep only the argmax: the decoder did not reach the sampler"
    assert all(rec["config"]["sample_smart"].get("min_p") == 1.0 for rec in records), records[0]["config"]
