"""Record validation: bad records are refused naming file:line, the record and the field; resume keys."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from sample_smart.cli import main
from sample_smart.io_checks import InputFileError
from sample_smart.ope.records import (
    NEG_INF,
    RECORD_SCHEMA,
    decode_logp,
    done_keys,
    encode_logp,
    read_records,
)


def record(pid: str = "arith_mini:0", k: int = 0, **changes):
    rec = {
        "schema": RECORD_SCHEMA,
        "run_key": "abc",
        "prompt_id": pid,
        "sample_index": k,
        "prompt": "Q: 1 + 1?\nA:",
        "response": " 2. The answer is 2.",
        "response_token_ids": [5, 6, 7],
        "total_logprob": -3.5,
        "target_logps": {"pi_clone": -3.5, "min_p_0.1": NEG_INF},
        "n_outside": {"pi_clone": 0, "min_p_0.1": 1},
        "judge_score": 0.7,
        "judge_mass": 0.4,
        "oracle_label": True,
    }
    rec.update(changes)
    return rec


def write(path, recs, raw_lines=()):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line)
    return path


def test_valid_records_round_trip(tmp_path):
    p = write(tmp_path / "r.jsonl", [record(), record(k=1)])
    recs = read_records(p)
    assert [decode_logp(r["target_logps"]["min_p_0.1"]) for r in recs] == [float("-inf")] * 2
    assert encode_logp(float("-inf")) == NEG_INF
    with pytest.raises(ValueError, match="NaN"):
        encode_logp(float("nan"))


@pytest.mark.parametrize(
    "changes, field, why",
    [
        ({"total_logprob": None}, "total_logprob", "NaN"),  # orjson writes NaN as null
        ({"target_logps": {"pi_clone": "inf"}}, "target_logps.pi_clone", "NaN and \\+inf"),
        ({"target_logps": {"pi_clone": "nan"}}, "target_logps.pi_clone", "not a finite number"),
        ({"target_logps": {"pi_clone": 2.0}}, "target_logps.pi_clone", "positive"),
        ({"judge_score": 1.5}, "judge_score", "probability"),
        ({"oracle_label": "yes"}, "oracle_label", "true or false"),
        ({"response_token_ids": []}, "response_token_ids", "non-empty"),
    ],
)
def test_bad_record_refused_with_line_record_and_field(tmp_path, changes, field, why):
    p = write(tmp_path / "r.jsonl", [record(), record(k=1, **changes)])
    with pytest.raises(InputFileError, match=why) as info:
        read_records(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}:2: record 'arith_mini:0'#1")
    assert field in msg


def test_missing_field_and_wrong_schema(tmp_path):
    rec = record()
    del rec["judge_score"]
    p = write(tmp_path / "r.jsonl", [rec])
    with pytest.raises(InputFileError, match=r":1: .*'judge_score' is missing"):
        read_records(p)
    p = write(tmp_path / "s.jsonl", [record(schema="other/1")])
    with pytest.raises(InputFileError, match="schema"):
        read_records(p)


def test_done_keys_skip_a_torn_line_and_refuse_another_run(tmp_path):
    p = write(tmp_path / "r.jsonl", [record(), record(k=1)], ['{"schema": "sample_smart.ope/1", "prom'])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert done_keys(p, RECORD_SCHEMA, "abc") == {("arith_mini:0", 0), ("arith_mini:0", 1)}
        with pytest.raises(InputFileError, match="other settings"):
            done_keys(p, RECORD_SCHEMA, "zzz")
    assert done_keys(tmp_path / "missing.jsonl", RECORD_SCHEMA, "abc") == set()


def test_analyze_cli_bad_record_exit_2_with_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"targets": {"pi_clone": {}, "min_p_0.1": {}}}))
    write(run / "records.jsonl", [record(), record(k=1, total_logprob=None)])
    res = CliRunner().invoke(main, ["ope", "analyze", str(run)])
    assert res.exit_code == 2, res.output
    assert f"{run / 'records.jsonl'}:2: record 'arith_mini:0'#1: field 'total_logprob'" in res.output
