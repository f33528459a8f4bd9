#!/usr/bin/env bash
# README command 1: install everything (fresh machine OK) and run the main job on the embedded default:
# what each decoder keeps on a real batch, then the embedded model through vLLM on arith_mini with
# greedy, plain sampling, min-p, Greedy-Threshold and the calibrated decoders side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/sample-smart model prepare
.venv/bin/sample-smart demo
.venv/bin/sample-smart eval --compare --limit 10 --repeats 4 --max-gen-toks 64 \
    --calibration docs/calibration/calibration.json --calibration-threshold 0.05 \
    --output-dir runs/demo "$@"
