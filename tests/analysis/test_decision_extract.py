"""`sample-smart decision extract` on the embedded model: records, resume, and bad input (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sample_smart.cli import main
from sample_smart.tasks import decision_arith

LABELS = ["--labels", "accept=Accept", "--labels", "reject=Reject"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same 3 problems twice: with the reply as target, and as a bare prompt (the prefix is appended);
    and one reply without any label token."""
    path = tmp_path_factory.mktemp("decision_extract") / "data.jsonl"
    recs = decision_arith.generate(3, "test")
    lines = [{"id": f"t{i}", "prompt": r["prompt"], "target": r["target"], "gt": r["gt"]} for i, r in enumerate(recs)]
    lines += [{"id": f"p{i}", "prompt": r["prompt"], "gt": r["gt"]} for i, r in enumerate(recs)]
    lines.append({"id": "m0", "prompt": recs[0]["prompt"], "target": "\\boxed{Maybe}"})  # no answer position
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _extract(data, out, *extra):
    return CliRunner().invoke(
        main,
        [
            "decision",
            "extract",
            "--data",
            str(data),
            "-o",
            str(out),
            *LABELS,
            "--answer-prefix",
            decision_arith.ANSWER_PREFIX,
            "--no-progress",
            *extra,
        ],
    )


def test_extract_records_resume_and_target_vs_prompt_agree(data, tmp_path):
    out = tmp_path / "probs.jsonl"
    res = _extract(data, out, "--limit", "5", "--step", "7")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["written"] == 5
    res = _extract(data, out, "--step", "7")  # resume: only the last two examples are new
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.exit_code == 0 and counts == {"output": str(out), "written": 2, "skipped": 5, "missing": 1}
    recs = {r["sample_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(recs) == ["m0", "p0", "p1", "p2", "t0", "t1", "t2"]
    missing = recs.pop("m0")
    assert missing["answer_pos"] is None and "no label token after" in missing["error"]
    for r in recs.values():
        assert r["step"] == 7 and r["answer_pos"] > 0
        assert r["p_accept"] + r["p_reject"] == pytest.approx(r["mass"], abs=1e-12)
        assert 0 < r["mass"] <= 1 and r["correct"] == (r["pred"] == r["gt"])
    for i in range(3):  # the target's answer position is the prompt + "\boxed{" one: same numbers
        t, p = recs[f"t{i}"], recs[f"p{i}"]
        assert t["answer_pos"] == p["answer_pos"]
        assert t["p_accept"] == pytest.approx(p["p_accept"], rel=1e-4)
        assert t["p_reject"] == pytest.approx(p["p_reject"], rel=1e-4)


def test_extract_bad_input_is_one_clear_error(data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        data.read_text().splitlines()[0]
        + "\n"
        + json.dumps({"id": "x", "prompt": "Is 1 + 1 = 2?", "gt": "maybe"})
        + "\n"
    )
    res = _extract(bad, tmp_path / "o.jsonl")
    assert res.exit_code == 2 and f"{bad}:2:" in res.output and "'gt' is 'maybe'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.jsonl").exists()
    res = CliRunner().invoke(
        main,
        [
            "decision",
            "extract",
            "--data",
            str(data),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--labels",
            "accept=Accept",
            "--labels",
            "reject=Acceptable",
        ],
    )
    assert res.exit_code == 2 and "'reject' (word 'Acceptable') share" in res.output
    res = CliRunner().invoke(
        main, ["decision", "extract", "--data", str(data), "-o", str(tmp_path / "o.jsonl"), "--labels", "accept"]
    )
    assert res.exit_code == 2 and "--labels" in res.output and "CLASS=WORD" in res.output
    res = _extract(data, data)
    assert res.exit_code == 2 and "is the input file" in res.output
