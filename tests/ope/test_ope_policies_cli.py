"""Policy specs and the CLI's input errors: exit status 2, one line naming the field, no model loaded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sample_smart.cli import main
from sample_smart.ope.policies import CLONE, build_policies, load_policy_file


def test_clone_is_always_a_target_and_prompt_change_keeps_the_decoder(tmp_path):
    pi0, targets = build_policies({"temperature": 1.0}, {"t_0.7": {"temperature": 0.7}, "bad": {"system_prompt": "x"}})
    assert list(targets) == [CLONE, "t_0.7", "bad"]
    assert targets[CLONE].decoder == pi0.decoder and targets[CLONE].system_prompt is None
    assert targets["bad"].decoder == pi0.decoder and targets["bad"].prompt("Q") == "x\n\nQ"
    f = tmp_path / "p.yaml"
    f.write_text("logging: {temperature: 1.0}\ntargets:\n  mp: {min_p: 0.1}\n")
    assert load_policy_file(f) == ({"temperature": 1.0}, {"mp": {"min_p": 0.1}})


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"t": {"min_p": 2}}, "targets.t: .*min_p"),
        ({"t": {"system_prompt": ""}}, "targets.t.system_prompt"),
        ({"bad name!": {"min_p": 0.1}}, "policy name"),
        ({CLONE: {"temperature": 0.5}}, "pi_clone: must equal the logging policy"),
    ],
)
def test_bad_policy_specs_name_the_field(spec, match):
    with pytest.raises(ValueError, match=match):
        build_policies(None, spec)


def test_greedy_logging_refused():
    with pytest.raises(ValueError, match="logging: a greedy"):
        build_policies({"temperature": 0.0}, {})


@pytest.mark.parametrize(
    "args, field",
    [
        (["--target", 't={"min_p": 2}'], "min_p"),
        (["--target", "t=notjson"], "--target t"),
        (["--target", "noequals"], "NAME=JSON"),
        (["--logging", "{"], "--logging"),
        (["--limit", "0"], "--limit"),
        (["--engine-arg", "no_such_field=1"], "no_such_field"),  # the shared engine flags, checked first
        (["--tensor-parallel-size", "0"], "--tensor-parallel-size"),
    ],
)
def test_prepare_cli_errors_exit_2(tmp_path, args, field):
    res = CliRunner().invoke(main, ["ope", "prepare", "-o", str(tmp_path / "run"), *args])
    assert res.exit_code == 2, res.output
    assert field in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_policy_file_unknown_field_exit_2(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"logging": {"temperature": 1.0}, "target": {}}))
    res = CliRunner().invoke(main, ["ope", "prepare", "-o", str(tmp_path / "run"), "--policies", str(f)])
    assert res.exit_code == 2 and "unknown field(s) ['target']" in res.output
