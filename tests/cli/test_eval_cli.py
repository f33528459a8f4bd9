"""`sample-smart eval` refuses bad flag values at parse time, naming the flag, before any model loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from support import REPO

from sample_smart.cli import main


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if the command gets as far as building the lm-eval model (engine)."""
    import sample_smart.integrations.lm_eval as lm_eval_mod

    def refuse(*args, **kwargs):
        raise AssertionError("the model was about to load although a flag was bad")

    monkeypatch.setattr(lm_eval_mod.SampleSmartLM, "__init__", refuse)


BAD = [
    (["--temperature", "-1"], "--temperature", "temperature=-1.0 is invalid"),
    (["--top-k", "-5"], "--top-k", "top_k=-5 is invalid"),
    (["--top-p", "0"], "--top-p", "0 < top_p <= 1"),
    (["--min-p", "1.5"], "--min-p", "0 <= min_p <= 1"),
    (["--greedy-threshold", "2"], "--greedy-threshold", "0 <= greedy_threshold <= 1"),
    (["--prob-threshold", "-0.1"], "--prob-threshold", "prob_threshold"),
    (["--dynamic-top-k", "1,2,3"], "--dynamic-top-k", "got 3 values"),
    (["--edt-var", "0,1,1"], "--edt-var", "N > 0"),
    (["--hewitt-epsilon", "3"], "--hewitt-epsilon", "hewitt_epsilon"),
    (["--confidence-bin-only", "11"], "--confidence-bin-only", "1..10"),
    (["--cal-acc", "1,-1,0.5"], "--cal-acc", "0 < B"),
    (["--cal-acc-base", "2"], "--cal-acc-base", "10 or 'e'"),
    (["--top-n-sigma", "0"], "--top-n-sigma", "top_n_sigma"),
    (["--repeats", "0"], "--repeats", ">= 1"),
    (["--limit", "-3"], "--limit", ">= 1"),
    (["--calibration", "/nonexistent/calibration.json"], "--calibration", "does not exist"),
    (["--calibration-threshold", "1.5"], "--calibration-threshold", "1.5"),
    (["--seed", "-1"], "--seed", "0<=x<=4294967295"),
    (["--seed", "4294967296"], "--seed", "0<=x<=4294967295"),
    (["--top-k", "99999999999999999999"], "--top-k", "1..2147483647"),
    (["--dynamic-top-k", ",".join(["9223372036854775808"] * 10)], "--dynamic-top-k", "0..2147483647"),
    (["--temperature", "1e-39"], "--temperature", "1e-06 <= T <= 1e+06"),
    (["--edt-var", "1,1e300,1"], "--edt-var", "|theta| <= 1e+06"),
    (["--edt-var", "2,1,1e-300"], "--edt-var", "1e-06 <= T0"),
]


@pytest.mark.parametrize("args,flag,message", BAD, ids=[b[1] for b in BAD])
def test_bad_flag_is_refused_before_the_model_loads(no_model, args, flag, message):
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 2, result.output
    assert flag in result.output and message in result.output, result.output


def test_bad_calibration_file_is_refused_naming_the_flag(no_model, tmp_path):
    bad = tmp_path / "calibration.json"
    bad.write_text('{"schema": "not a calibration"}')
    result = CliRunner().invoke(main, ["eval", "--calibration", str(bad)])
    assert result.exit_code == 2, result.output
    assert "--calibration" in result.output and str(bad) in result.output


def test_decoder_flags_build_one_config_and_label():
    from sample_smart.commands.eval import _decoders

    params = {
        "min_p": 0.1,
        "greedy_threshold": 0.3,
        "temperature": 0.7,
        "compare": False,
        "calibration": None,
        "calibration_mode": "epsilon",
        "label": None,
    }
    [(label, cfg)] = _decoders(params)
    assert cfg.to_dict() == {"temperature": 0.7, "min_p": 0.1, "greedy_threshold": 0.3}
    assert "min_p_0.1" in label and "greedy_threshold_0.3" in label
    runs = _decoders({**params, "compare": True})
    assert [name for name, _ in runs][:4] == ["greedy", "sampling_t1", "min_p_0.1", "greedy_threshold_0.3"]
    assert runs[-1][1] == cfg  # the flags' decoder joins the comparison


def test_unknown_task_is_refused_before_the_model_loads(no_model):
    result = CliRunner().invoke(main, ["eval", "--task-config", "no_such_task_anywhere"])
    assert result.exit_code == 2, result.output
    assert "--task-config" in result.output and "unknown task 'no_such_task_anywhere'" in result.output
    result = CliRunner().invoke(main, ["eval", "--task-config", "/nonexistent/task.yaml"])
    assert result.exit_code == 2 and "no such file" in result.output, result.output


def test_the_examples_of_eval_help_run_as_written(no_model, monkeypatch, tmp_path):
    """Every `sample-smart eval ...` line of the help parses and gets as far as loading the model
    (placeholders: DIR -> a folder, $b -> 3); run from the repository root, as the help says."""
    import shlex

    import sample_smart.integrations.lm_eval_runner as runner

    monkeypatch.setattr(runner, "check_task", lambda task, data_dir=None: task)  # tested above
    monkeypatch.chdir(REPO)
    help_text = CliRunner().invoke(main, ["eval", "--help"]).output
    joined = help_text.replace("\\\n", " ")  # shell line continuations
    lines = [line.strip() for line in joined.splitlines() if "sample-smart eval " in line]
    assert len(lines) >= 3, help_text
    assert any("--calibration-threshold" in line and "--compare" in line for line in lines), lines
    for line in lines:
        command = line[line.index("sample-smart eval ") + len("sample-smart eval ") :].split(";")[0]
        args = [str(tmp_path) if a == "DIR" else a.replace("$b", "3") for a in shlex.split(command)]
        result = CliRunner().invoke(main, ["eval", *args])
        assert isinstance(result.exception, AssertionError), (line, result.output)
        assert "the model was about to load" in str(result.exception), (line, result.output)
