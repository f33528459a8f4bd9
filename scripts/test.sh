#!/usr/bin/env bash
# README command 2: install everything (fresh machine OK) and run the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k processors`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Reuse big buffers instead of mapping them afresh per call (see benchmarks/README.md).
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
.venv/bin/sample-smart model prepare
exec .venv/bin/python -m pytest -q -rfEs --durations=15 "$@"
