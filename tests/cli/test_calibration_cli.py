"""`sample-smart calibrate ...` end to end on synthetic traces and pairs, and its error messages."""

import json

import numpy as np
import orjson
import pytest
from calibration_synth import make_records, write_traces
from click.testing import CliRunner

from sample_smart.calibration import CalibrationGrid, calibrated_topk, load_decoder_settings
from sample_smart.cli import main


def run(*args, ok=True):
    result = CliRunner().invoke(main, ["calibrate", *map(str, args)])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("calcli")
    write_traces(d / "t1.jsonl", make_records(seed=11, n_records=15, n_tokens=80))
    write_traces(d / "t2.jsonl", make_records(seed=12, n_records=15, n_tokens=80))
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 2000)
    correct = rng.random(2000) < conf
    (d / "pairs.jsonl").write_bytes(
        b"".join(orjson.dumps({"confidence": float(c), "correct": bool(k)}) + b"\n" for c, k in zip(conf, correct))
    )
    (d / "pairs.csv").write_text("confidence,correct\n" + "".join(f"{c},{int(k)}\n" for c, k in zip(conf, correct)))
    return d, conf, correct


def test_grid_fit_and_load(work):
    d, _, _ = work
    out = run("grid", d / "t1.jsonl", d / "t2.jsonl", "-o", d / "grid.json", "--max-rank", 15).output
    assert "2400 tokens from 30 records" in out
    grid = CalibrationGrid.load(d / "grid.json")
    assert grid.max_rank == 15 and grid.n_tokens == 2400
    out = run(
        "fit",
        d / "grid.json",
        "-o",
        d / "calib.json",
        "--base",
        "10",
        "--weighted",
        "--n-boot",
        200,
        "--epsilon-threshold",
        0.05,
        "--min-samples",
        30,
    ).output
    assert "base 10" in out and "R^2 =" in out and "equivalent epsilon" in out
    data = json.loads((d / "calib.json").read_text())
    assert data["log_base"] == 10 and data["fit"]["weighted"] and data["source"]["grid_file"].endswith("grid.json")
    ks = calibrated_topk(grid, 0.05, 30)
    assert f"{ks}" in out
    assert load_decoder_settings(d / "calib.json", "topk") == {"dynamic_top_k": ks}
    assert load_decoder_settings(d / "calib.json", "epsilon")["cal_acc_base"] == 10


def test_buckets_default_output_beside_input(work):
    d, conf, correct = work
    out = run("buckets", d / "pairs.jsonl").output
    values = json.loads((d / "pairs.json").read_text())
    assert isinstance(values, list) and len(values) == 100 and all(0 <= v <= 1 for v in values)
    raw = [line for line in out.splitlines() if line.startswith("overall accuracy")]
    assert len(raw) == 2 and raw[0].split()[-1] == raw[1].split()[-1] == f"{correct.mean():.6f}"
    run("buckets", d / "pairs.csv", "-o", d / "from_csv.json")
    assert json.loads((d / "from_csv.json").read_text()) == pytest.approx(values)


def test_plots_are_written(work):
    d, _, _ = work
    if not (d / "calib.json").exists():
        run("grid", d / "t1.jsonl", "-o", d / "grid.json")
        run("fit", d / "grid.json", "-o", d / "calib.json", "--n-boot", 50)
    for kind, src in (("grid", "grid.json"), ("fit", "calib.json"), ("reliability", "pairs.jsonl")):
        target = d / f"{kind}.png"
        run("plot", kind, d / src, "-o", target)
        head = target.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 20_000
    res = run("plot", "fit", d / "grid.json", "-o", d / "x.png", ok=False)
    assert res.exit_code == 2 and "holds no fit" in res.output


def test_clear_errors(work, tmp_path):
    d, _, _ = work
    (tmp_path / "empty.jsonl").write_text("")
    res = run("grid", tmp_path / "empty.jsonl", "-o", tmp_path / "g.json", ok=False)
    assert res.exit_code == 2 and "no teacher-forced positions" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.jsonl").write_text('{"schema": "sample_smart.teacher_forced/1"\n')
    res = run("grid", tmp_path / "bad.jsonl", "-o", tmp_path / "g.json", ok=False)
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
    res = run("grid", d / "t1.jsonl", "-o", tmp_path / "g.json", "--max-rank", 50, ok=False)
    assert res.exit_code == 2 and "max_rank" in res.output
    res = run("fit", d / "pairs.jsonl", "-o", tmp_path / "c.json", ok=False)
    assert res.exit_code == 2 and "not valid JSON" in res.output
    res = run("fit", d / "grid.json", "-o", tmp_path / "c.json", "--base", "2", ok=False)
    assert res.exit_code == 2 and "--base" in res.output
    res = run("fit", d / "grid.json", "-o", tmp_path / "c.json", "--topk-threshold", 1.5, ok=False)
    assert res.exit_code == 2 and "must be in (0, 1]" in res.output
    res = run("buckets", tmp_path / "empty.jsonl", ok=False)
    assert res.exit_code == 2 and "no (confidence, correct) pairs" in res.output
    (tmp_path / "p.jsonl").write_text('{"confidence": 0.5, "correct": true}\n{"confidence": 2, "correct": true}\n')
    res = run("buckets", tmp_path / "p.jsonl", ok=False)
    assert res.exit_code == 2 and "p.jsonl:2" in res.output
    assert not (tmp_path / "p.json").exists()
    res = run("buckets", tmp_path / "missing.jsonl", ok=False)
    assert res.exit_code == 2 and "no such file" in res.output
