"""The benchmarks' quick mode (CI): every case runs once on small shapes and every alternative's
kept set agrees with ours where the semantics match. No timing assertions."""

from __future__ import annotations

import sys

import pytest
import torch
from support import REPO

sys.path.insert(0, str(REPO))

from benchmarks import engine as engine_bench  # noqa: E402 (after the path/environment set-up above)
from benchmarks import processors as bench  # noqa: E402 (after the path/environment set-up above)
from benchmarks.naive import naive_process  # noqa: E402 (after the path/environment set-up above)
from sample_smart import DecodeConfig  # noqa: E402 (after the path/environment set-up above)
from sample_smart.processors import BatchState, plans  # noqa: E402 (after the path/environment set-up above)


@pytest.fixture(scope="module")
def quick_results():
    return bench.run(
        shapes=bench.QUICK_SHAPES,
        dtypes=("float32", "bfloat16"),
        kinds=("peaked", "flat"),
        quick=True,
        log=lambda _: None,
    )


def test_every_case_ran_and_alternatives_are_present(quick_results):
    runs = quick_results["runs"]
    assert len(runs) == len(bench.QUICK_SHAPES) * 2 * 2
    groups = {r["group"] for r in runs[0]["results"]}
    assert groups == {"floor", "ours", "naive", "transformers", "vllm"}
    names = [r["case"] for r in runs[0]["results"]]
    for knob in bench.KNOBS:
        assert f"ours: {knob}" in names
    for r in runs:
        for row in r["results"]:
            assert row["runs"] == 1 and row["median_ms"] > 0 and row["x_read"] > 0


def test_alternatives_agree_with_ours_in_float32(quick_results):
    for r in quick_results["runs"]:
        if r["dtype"] != "float32":
            continue
        batch = r["shape"][0]
        checked = [row for row in r["results"] if row["same_as"]]
        assert len(checked) >= 15
        for row in checked:
            # identical sets but for float32 rounding at a rule's boundary: at most a token a row
            assert row["mismatch"] <= batch, (r["shape"], r["kind"], row)


def test_agreement_check_catches_a_semantic_difference():
    """The check can fail: naive min-p compared with our epsilon disagrees on many tokens."""
    x = bench.make_logits(4, 3000, "peaked", torch.float32, "cpu")
    cases = bench.build_cases(4, "cpu", with_transformers=False, with_vllm=False)
    wrong = bench.Case(
        "naive min_p as epsilon",
        "naive",
        lambda t: naive_process(t, BatchState.from_configs([DecodeConfig(min_p=0.1)] * 4)),
        same_as="ours: epsilon",
    )
    bench.check_agreement(cases + [wrong], x)
    assert wrong.mismatch > 100


def test_timed_runs_take_the_inputs_in_turn():
    """Every case's runs (warm-up and timed) cycle through the inputs, so no data-dependent op is
    timed on one tensor only."""
    inputs = [torch.full((2, 8), float(i)) for i in range(bench.INPUTS)]
    seen: list[float] = []
    case = bench.Case("probe", "floor", lambda x: seen.append(float(x[0, 0])))
    bench.time_cases([case], inputs, "cpu", repeats=7, budget=10.0, warmup=2, min_runs=7)
    assert len(case.times) == 7
    assert seen == [0.0, 1.0] + [float(i % bench.INPUTS) for i in range(7)]


def test_per_row_chain_really_differs_per_row():
    rows = bench.per_row_chain(20)
    assert len({c.to_dict().__repr__() for c in rows}) >= 17


def test_cli_quick_writes_json_and_plot(tmp_path):
    from click.testing import CliRunner

    from sample_smart.cli import main

    out, png = tmp_path / "b.json", tmp_path / "b.png"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            "processors",
            "--quick",
            "--shape",
            "3x500",
            "--kind",
            "peaked",
            "--no-vllm",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "ours: full chain, one config" in res.output and "x read" in res.output
    assert out.stat().st_size > 0 and png.stat().st_size > 0
    bad = CliRunner().invoke(main, ["bench", "processors", "--shape", "0x10"])
    assert bad.exit_code != 0


@pytest.mark.engine
def test_engine_bench_smoke(llm, llm_processor):
    """The engine benchmark's measurement on the shared engine: every request gets all its tokens,
    with the processor unused, with the full chain and with the mixed stream (staggered lengths,
    other settings per request), and the processor's steps are timed."""
    timer = engine_bench.StepTimer(llm_processor)
    try:
        for mode in ("installed", "full chain", "mixed"):
            r = engine_bench.measure(llm, mode, batch=3, tokens=4, timer=timer)
            assert r["tokens"] == sum(engine_bench.lengths(3, 4, mode)) and r["tokens_per_s"] > 0
            assert len(r["step_ms"]) >= max(engine_bench.lengths(3, 4, mode)) - 1  # one per decode step
            assert "reference_ms" not in r
        assert engine_bench.lengths(3, 4, "mixed") == [2, 2, 3]
        fallbacks = plans.fallbacks()
        r = engine_bench.measure(llm, engine_bench.REFERENCE, batch=3, tokens=4, timer=timer)
        ref = r["reference_ms"]  # the jitter floor: each fixed workload once per timed step
        assert list(ref) == list(engine_bench.ReferenceWork.NAMES)
        assert all(len(ms) == len(r["step_ms"]) >= 3 and min(ms) > 0 for ms in ref.values())
        assert plans.fallbacks() == fallbacks  # the fixed-input processor ran its prepared programs
        assert not timer.with_reference and not timer.take_reference()["matmul"]
    finally:
        for name in ("update_state", "apply"):  # the shared engine's processor as it was
            del llm_processor.__dict__[name]
    p = engine_bench._percentiles([1.0, 2.0, 3.0, 10.0])
    assert p["p50_ms"] in (2.0, 3.0) and p["max_ms"] == 10.0 and p["steps"] == 4


def test_step_share_is_the_processor_mean_over_the_bare_mean_step():
    """Full lengths: 4 requests x 10 tokens at 20 tok/s is 2 s for 10 steps, a 200 ms bare step; the
    mixed stream's staggered lengths (5, 6, 7, 8 tokens: 26 tokens, 8 steps) at 13 tok/s too."""
    full = engine_bench.step_share("full chain", 4, 10, mean_ms=10.0, bare_tokens_per_s=20.0)
    assert full["bare_step_ms"] == pytest.approx(200.0) and full["share"] == pytest.approx(0.05)
    assert full["predicted_ratio"] == pytest.approx(1 / 1.05)
    assert engine_bench.lengths(4, 10, "mixed") == [5, 6, 7, 8]
    mixed = engine_bench.step_share("mixed", 4, 10, mean_ms=20.0, bare_tokens_per_s=13.0)
    assert mixed["bare_step_ms"] == pytest.approx(250.0) and mixed["share"] == pytest.approx(0.08)
