#!/usr/bin/env bash
# README command 1: install everything (fresh machine OK) and run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/sample-smart model prepare
.venv/bin/sample-smart demo "$@"
