"""Reproduce docs/calibration/: the calibration grid and power-law fit on GSM8K train.

    .venv/bin/python docs/calibration/run_gsm8k.py [--train ../shared/data/gsm8k/train.jsonl] [--n 500]

Teacher-forces the embedded model (SmolLM2-135M-Instruct, fp32, transformers backend,
exact full-vocabulary ranks) on the first N GSM8K train examples, the question as the
user turn of the chat template and the reference answer as the assistant's target;
then builds the grid (R = 20), fits log c = A + B log p (natural log, unweighted, 2000
bootstrap resamples) and writes grid.json, calibration.json, grid_heatmap.png,
powerlaw_fit.png and the numbers in NUMBERS.md. The trace file itself (~30 MB) stays
in the cache (``$SAMPLE_SMART_CACHE/traces``); it is resumable if interrupted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(HERE.parents[2] / "shared/data/gsm8k/train.jsonl"))
    ap.add_argument("--n", type=int, default=500, help="first N train examples (>= 200)")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from sample_smart.models import cache_dir, require_default_model
    from sample_smart.traces.examples import Example
    from sample_smart.traces.teacher_forcing import run_teacher_forcing
    from sample_smart.traces.transformers_backend import TransformersTeacherForcer

    out = Path(args.out)
    traces = cache_dir() / "traces" / f"gsm8k_train_first{args.n}_smollm2_tf.jsonl"
    traces.parent.mkdir(parents=True, exist_ok=True)

    def examples():
        with open(args.train, "rb") as fh:
            for i, line in enumerate(fh):
                rec = orjson.loads(line)
                yield Example(
                    id=f"gsm8k-train-{i}", prompt=[{"role": "user", "content": rec["question"]}], target=rec["answer"]
                )

    backend = TransformersTeacherForcer(require_default_model(), top_k=20, batch_size=8)
    counts = run_teacher_forcing(examples(), backend, traces, chat_template=True, limit=args.n, total=args.n)
    print(f"teacher forcing: {counts} -> {traces}", file=sys.stderr)

    cli = [sys.executable, "-m", "sample_smart.cli", "calibrate"]
    run = lambda *a: subprocess.run([*cli, *map(str, a)], check=True, capture_output=True, text=True).stdout
    log = run("grid", traces, "-o", out / "grid.json", "--max-rank", 20)
    log += run(
        "fit",
        out / "grid.json",
        "-o",
        out / "calibration.json",
        "--base",
        "e",
        "--n-boot",
        2000,
        "--topk-threshold",
        0.05,
        "--min-samples",
        50,
    )
    log += run(
        "fit",
        out / "grid.json",
        "-o",
        out / "calibration_weighted.json",
        "--base",
        "e",
        "--weighted",
        "--n-boot",
        2000,
        "--topk-threshold",
        0.05,
        "--min-samples",
        50,
    )
    run("plot", "grid", out / "grid.json", "-o", out / "grid_heatmap.png")
    run("plot", "fit", out / "calibration.json", "-o", out / "powerlaw_fit.png")
    run("plot", "fit", out / "calibration_weighted.json", "-o", out / "powerlaw_fit_weighted.png")
    print(log)
    (out / "cli_output.txt").write_text(log)


if __name__ == "__main__":
    main()
