#!/usr/bin/env bash
# Lint and format check (ruff, configured in pyproject.toml). Installs first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check sample_smart tests benchmarks docs scripts
.venv/bin/ruff format --check sample_smart tests benchmarks docs scripts
