"""`sample-smart compare` and sample_smart.analysis.compare*: real models (the embedded SmolLM2-135M
and its bfloat16 copy), statistics checked against a plain forward pass, files, resume, bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner
from traces_data import assert_ranks_agree, plain_logprobs

from sample_smart.analysis.compare import kl_readout, percentiles
from sample_smart.analysis.compare_run import CompareSpec, make_bf16_copy, prepare, run_compare
from sample_smart.analysis.compare_tables import load_run, parquet_available
from sample_smart.cli import main
from sample_smart.models import require_default_model
from sample_smart.traces.examples import Example, encode_example

PAIRS = [  # project-authored text
    ("What is 2 + 3?", "2 + 3 = 5. The answer is 5."),
    ("Hello wor", "ld"),  # one merge across the boundary: the exact-boundary encoding is used
    ("Tom has 4 apples and eats 1. How many are left?", "4 - 1 = 3. The answer is 3."),
]


def _write(path, rows) -> str:
    with open(path, "wb") as f:
        for row in rows:
            f.write((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n")
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forward passes: one intra-op thread is as fast on a quiet 2-core machine and does not
    stall (spinning threads) when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paths():
    return str(require_default_model()), str(make_bf16_copy())


@pytest.fixture(scope="module")
def loaded():
    """{model folder: TransformersTeacherForcer}: each model loads once for the module."""
    return {}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp_data")
    return _write(tmp / "pairs.jsonl", [{"id": f"ex{i}", "prompt": p, "target": t} for i, (p, t) in enumerate(PAIRS)])


@pytest.fixture(scope="module")
def bf16_run(paths, loaded, data, tmp_path_factory):
    spec = CompareSpec(
        models=list(paths),
        names=["fp32", "bf16"],
        data=data,
        mode="teacher_forced",
        output_dir=str(tmp_path_factory.mktemp("cmp_bf16")),
        batch_size=2,
        n_quantiles=4,
    )
    return spec, run_compare(spec, progress=False, loaded=loaded)


@pytest.fixture(scope="module")
def self_run(paths, loaded, data, tmp_path_factory):
    """The embedded model against a second, independent load of the same weights (through a link,
    so it is not recognised as the same folder and shared)."""
    tmp = tmp_path_factory.mktemp("cmp_self")
    (tmp / "again").symlink_to(paths[0], target_is_directory=True)
    spec = CompareSpec(
        models=[paths[0], str(tmp / "again")], data=data, mode="teacher_forced", output_dir=str(tmp / "out")
    )
    return spec, run_compare(spec, progress=False, loaded=loaded)


def _direct(model, enc):
    """float64 log-softmax rows of a plain (unbatched, unpadded) forward pass at the target positions."""
    lp = plain_logprobs(model, enc.input_ids)[len(enc.prompt_ids) - 1 : -1]
    return torch.log_softmax(lp.double(), dim=-1)


def test_teacher_forced_statistics_equal_a_plain_forward_pass(paths, loaded, bf16_run):
    _, result = bf16_run
    manifest, records = load_run(result["prefix"])
    assert [r["id"] for r in records] == ["ex0", "ex1", "ex2"] and result["counts"]["written"] == 3
    tok = loaded[paths[0]].tokenizer
    all_kl, all_dp, all_same, all_lb, all_lq = [], [], [], [], []
    for rec, (prompt, target) in zip(records, PAIRS):
        enc = encode_example(tok, Example(rec["id"], prompt, target), chat_template=True)
        lps = {name: _direct(loaded[path].model, enc) for name, path in zip(("fp32", "bf16"), paths)}
        gold = torch.tensor(enc.target_ids)
        for name, lp in lps.items():
            cols = rec["models"][name]
            assert cols["next_id"] == enc.target_ids
            assert cols["current_id"] == enc.input_ids[len(enc.prompt_ids) - 1 : -1]
            entropy = -(lp.exp() * lp).sum(-1)
            assert np.allclose(cols["entropy"], entropy.numpy(), atol=2e-4)
            gold_lp = lp.gather(1, gold[:, None])[:, 0]
            assert np.allclose(cols["logprob_next"], gold_lp.numpy(), atol=2e-4)
            assert np.allclose(cols["p_next"], gold_lp.exp().numpy(), atol=2e-5)
            assert np.allclose(cols["p_max"], lp.max(-1).values.exp().numpy(), atol=2e-5)
            assert_ranks_agree(cols["rank_next"], enc.target_ids, lp.float(), tol=1e-5)
        lb, lq = lps["fp32"], lps["bf16"]
        kl = (lb.exp() * (lb - lq)).sum(-1).numpy()
        dp = (lq.gather(1, gold[:, None]).exp() - lb.gather(1, gold[:, None]).exp())[:, 0].numpy()
        pair = rec["pairs"]["fp32|bf16"]
        # batched/padded vs plain forward passes differ by float rounding only
        assert np.allclose(pair["kl"], kl, rtol=0.05, atol=2e-6)
        assert np.allclose(pair["delta_p"], dp, atol=2e-5)
        all_kl += pair["kl"]
        all_dp += pair["delta_p"]
        all_same += pair["same_top"]
        all_lb += rec["models"]["fp32"]["logprob_next"]
        all_lq += rec["models"]["bf16"]["logprob_next"]
    summary = orjson.loads(open(result["files"]["summary_stats"], "rb").read())
    r = summary["pairs"]["fp32|bf16"]
    kl = np.array(all_kl)
    assert r["n_positions"] == kl.size == sum(rec["models"]["fp32"]["n_tokens"] for rec in records)
    assert math.isclose(r["mean_kl"], kl.mean(), rel_tol=1e-9)
    assert math.isclose(r["mean_kl_se"], kl.std(ddof=1) / math.sqrt(kl.size), rel_tol=1e-9)
    assert math.isclose(r["kl_percentiles"]["max"], kl.max()) and math.isclose(r["kl_percentiles"]["min"], kl.min())
    assert math.isclose(r["kl_percentiles"]["p99"], np.percentile(kl, 99), rel_tol=1e-9)
    assert math.isclose(r["rms_delta_p"], math.sqrt(np.mean(np.square(all_dp))), rel_tol=1e-9)
    share = np.mean(all_same)
    assert math.isclose(r["same_top_share"], share) and math.isclose(
        r["same_top_share_se"], math.sqrt(share * (1 - share) / kl.size)
    )
    ratio = np.mean(np.array(all_lb, np.float64) - np.array(all_lq, np.float64))
    assert math.isclose(r["ln_ppl_ratio"], ratio, rel_tol=1e-6, abs_tol=1e-12)
    assert math.isclose(math.log(r["ppl_other"] / r["ppl_base"]), ratio, rel_tol=1e-6, abs_tol=1e-9)


def test_bf16_copy_gives_small_positive_kl(bf16_run):
    _, result = bf16_run
    r = orjson.loads(open(result["files"]["summary_stats"], "rb").read())["pairs"]["fp32|bf16"]
    assert 0 < r["mean_kl"] < 1e-2, r["mean_kl"]  # rounding weights to bf16 moves the distributions a little
    assert r["mean_kl"] > 3 * r["mean_kl_se"]  # and not by chance
    assert r["kl_percentiles"]["min"] >= -1e-12  # KL >= 0 up to float64 rounding
    assert r["same_top_share"] >= 0.9 and 0 < r["rms_delta_p"] < 0.05


def test_a_model_against_itself_gives_zeros(self_run):
    _, result = self_run
    _, records = load_run(result["prefix"])
    (key,) = records[0]["pairs"]
    assert key == "SmolLM2-135M-Instruct-fp32|again"
    for rec in records:
        pair = rec["pairs"][key]
        # float rounding only (this file's tolerances for batched vs plain passes): alone the test
        # sees exact zeros, after the module's bf16 comparison in the same process one delta_p of
        # 1.4e-6 (the kernels' float paths need not repeat bit for bit)
        assert np.allclose(pair["kl"], 0.0, atol=2e-6) and np.allclose(pair["delta_p"], 0.0, atol=2e-5)
        assert all(pair["same_top"])
    r = orjson.loads(open(result["files"]["summary_stats"], "rb").read())["pairs"][key]
    assert abs(r["mean_kl"]) <= 2e-6 and abs(r["mean_delta_p"]) <= 2e-5 and r["rms_delta_p"] <= 2e-5
    assert r["same_top_share"] == 1.0 and abs(r["ln_ppl_ratio"]) <= 1e-5


def test_the_file_set(bf16_run):
    spec, result = bf16_run
    prefix, files = result["prefix"], result["files"]
    assert os.path.basename(prefix).startswith("compare_20") and prefix.endswith("Z")
    assert os.path.exists(files["errors"])
    for key in (
        "run",
        "tokens_jsonl",
        "tokens_fp32",
        "tokens_bf16",
        "pairs",
        "by_current_token",
        "by_next_token",
        "entropy_quantiles",
        "summary_stats",
        "model_comparison",
        "plot_entropy",
        "plot_p_next",
        "plot_entropy_quantiles",
        "plot_kl",
    ):
        assert os.path.getsize(files[key]) > 0, key
        assert os.path.basename(files[key]).startswith(os.path.basename(prefix))
    assert parquet_available() and os.path.getsize(files["tokens_fp32_parquet"]) > 0
    import pandas as pd

    folder = os.path.join(files["prompts_dir"], "ex0")
    assert sorted(os.listdir(folder)) == ["bf16.csv", "fp32.csv", "texts.json"]
    bf = pd.read_csv(os.path.join(folder, "bf16.csv"))
    assert {"entropy_nats", "p_next", "rank_next", "p_max", "kl_from_fp32_nats", "delta_p_vs_fp32"} <= set(bf.columns)
    texts = orjson.loads(open(os.path.join(folder, "texts.json"), "rb").read())
    assert texts["target"] == PAIRS[0][1] and texts["models"]["fp32"]["n_tokens"] == len(bf)
    tokens = pd.read_csv(files["tokens_fp32"])
    assert len(tokens) == orjson.loads(open(files["summary_stats"], "rb").read())["per_model"]["fp32"]["n_tokens"]
    assert pd.read_parquet(files["tokens_fp32_parquet"])["entropy_nats"].tolist() == pytest.approx(
        tokens["entropy_nats"].tolist()
    )
    by_next = pd.read_csv(files["by_next_token"])
    assert by_next.groupby("model")["count"].sum().tolist() == [len(tokens)] * 2
    quant = pd.read_csv(files["entropy_quantiles"])
    fp = quant[quant.model == "fp32"]
    assert 1 <= len(fp) <= spec.n_quantiles and fp["count"].sum() == len(tokens)
    assert (fp["entropy_low_nats"].diff().dropna() > 0).all()
    comp = orjson.loads(open(files["model_comparison"], "rb").read())
    assert comp["models"] == ["fp32", "bf16"] and set(comp["entropy_percentiles_nats"]["bf16"]) >= {
        "max",
        "median",
        "min",
    }
    assert comp["experiment_name"] == "compare" and "nats" in comp["units"]


def test_resume_after_a_crash_redoes_only_the_lost_prompt(paths, loaded, bf16_run):
    spec, result = bf16_run
    path = result["files"]["tokens_jsonl"]
    lines = open(path, "rb").read().splitlines(keepends=True)
    with open(path, "wb") as f:  # the last prompt was being written when the process died
        f.write(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        again = run_compare(spec, progress=False, loaded=loaded)
    assert again["resumed"] and again["prefix"] == result["prefix"]
    assert again["counts"] == {"prompts": 3, "skipped_done": 2, "written": 1, "failed": 0}
    assert open(path, "rb").read().splitlines(keepends=True) == lines  # deterministic: the same line again


def test_generation_scores_each_models_own_tokens(paths, loaded, data, tmp_path):
    spec = CompareSpec(
        models=[paths[0], paths[1]],
        names=["fp32", "bf16"],
        data=data,
        mode="generation",
        max_new_tokens=5,
        limit=2,
        output_dir=str(tmp_path),
    )
    result = run_compare(spec, progress=False, loaded=loaded)
    _, records = load_run(result["prefix"])
    assert len(records) == 2 and "pairs" not in records[0]
    for rec, (prompt, _) in zip(records, PAIRS):
        for name, path in zip(("fp32", "bf16"), paths):
            model, tok = loaded[path].model, loaded[path].tokenizer
            enc = encode_example(tok, Example(rec["id"], prompt, "x"), chat_template=True)
            with torch.inference_mode():  # greedy decoding written independently
                ref = model.generate(
                    torch.tensor([enc.prompt_ids]),
                    do_sample=False,
                    max_new_tokens=5,
                    pad_token_id=loaded[path].pad_id,
                    top_k=None,
                    top_p=None,
                    temperature=None,
                )
            gen = ref[0, len(enc.prompt_ids) :].tolist()
            cols = rec["models"][name]
            assert cols["next_id"] == gen and 1 <= cols["n_tokens"] <= 5
            assert cols["text"] == tok.decode(gen, skip_special_tokens=False)
            assert set(cols["rank_next"]) == {1}  # greedy tokens are the raw argmax
            lp = _direct(model, encode_example(tok, Example(rec["id"], prompt, cols["text"]), chat_template=True))
            assert np.allclose(cols["entropy"], (-(lp.exp() * lp).sum(-1)).numpy(), atol=2e-4)
    summary = orjson.loads(open(result["files"]["summary_stats"], "rb").read())
    assert summary["pairs"] == {} and summary["decoder"] == {"temperature": 0.0}
    assert "plot_kl" not in result["files"] and os.path.getsize(result["files"]["plot_entropy"]) > 0


def test_one_bad_prompt_is_reported_and_skipped(paths, loaded, tmp_path):
    rows = [
        {"id": "good0", "prompt": PAIRS[0][0], "target": PAIRS[0][1]},
        b'{"id": "broken", "prompt": ',
        {"id": "long", "prompt": "word " * 9000, "target": "x"},  # above the 8192-token context
        {"id": "good1", "prompt": PAIRS[2][0], "target": PAIRS[2][1]},
    ]
    data = _write(tmp_path / "mixed.jsonl", rows)
    spec = CompareSpec(models=[paths[0], paths[0]], data=data, output_dir=str(tmp_path / "out"))
    result = run_compare(spec, progress=False, loaded=loaded)
    assert result["counts"]["written"] == 2
    _, records = load_run(result["prefix"])
    assert [r["id"] for r in records] == ["good0", "good1"]
    errs = {e["id"]: e["error"] for e in result["errors"]}
    assert "8192" in errs["long"] and any("mixed.jsonl:2" in e for e in errs.values())
    written = [orjson.loads(line) for line in open(result["files"]["errors"], "rb")]
    assert len(written) == 2


def test_prepare_refuses_before_any_model_loads(paths, tmp_path, monkeypatch):
    from sample_smart.traces import transformers_backend

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers_backend.TransformersTeacherForcer, "__init__", no_load)
    ok = _write(tmp_path / "ok.jsonl", [{"prompt": "a", "target": "b"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    long = _write(tmp_path / "long.jsonl", [{"prompt": "word " * 9000, "target": "x"}])
    # a real tokenizer with one token more (a folder with its config and tokenizer, no weights:
    # the vocabularies are compared before any weight is read)
    from transformers import AutoTokenizer

    other = tmp_path / "other_vocab"
    tok = AutoTokenizer.from_pretrained(paths[0])
    tok.add_tokens(["<compare-test-token>"])
    tok.save_pretrained(other)
    (other / "config.json").write_bytes(open(os.path.join(paths[0], "config.json"), "rb").read())
    runner = CliRunner()
    cases = [
        (["--model", str(other), "--data", ok, "--teacher-forced"], "different vocabulary"),
        (["--model", str(tmp_path / "missing"), "--data", ok, "--teacher-forced"], "unknown model"),
        (["--model", paths[0], "--model", paths[1], "--model-names", "a,b,c", "--data", ok], "3 names for 2 models"),
        (["--model", paths[1], "--data", str(empty), "--teacher-forced"], "empty file"),
        (["--model", paths[1], "--data", long, "--teacher-forced"], "above the context of 8192"),
        (["--model", paths[1], "--data", ok, "--teacher-forced", "--min-p", "0.1"], "apply to generation"),
        (["--model", paths[1], "--data", ok, "--min-p", "2"], "--min-p"),
    ]
    for args, message in cases:
        res = runner.invoke(main, ["compare", "--output-dir", str(tmp_path / "o"), *args])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)
    with pytest.raises(ValueError, match="at least 2 models"):
        prepare(CompareSpec(models=[paths[0]], data=ok))
    assert not (tmp_path / "o").exists()


def test_cli_generation_run_with_a_decoder(paths, tmp_path):
    data = _write(tmp_path / "p.jsonl", [{"id": "q", "prompt": PAIRS[0][0]}])
    res = CliRunner().invoke(
        main,
        [
            "compare",
            "--model",
            paths[0],
            "--model",
            paths[0],
            "--model-names",
            "a,b",
            "--data",
            data,
            "--max-new-tokens",
            "3",
            "--min-p",
            "0.1",
            "--seed",
            "7",
            "--output-dir",
            str(tmp_path / "o"),
            "--experiment-name",
            "minp",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    out = orjson.loads(res.stdout.strip().splitlines()[-1])
    summary = orjson.loads(open(out["summary"], "rb").read())
    assert summary["experiment_name"] == "minp" and summary["mode"] == "generation"
    assert summary["decoder"] == {"min_p": 0.1}
    assert summary["per_model"]["a"]["n_tokens"] == summary["per_model"]["b"]["n_tokens"] >= 1
    # same model, same seed: the same sampled tokens
    _, records = load_run(out["prefix"])
    assert records[0]["models"]["a"]["next_id"] == records[0]["models"]["b"]["next_id"]


def test_kl_readout_conventions():
    kl, dp = np.array([0.0, 0.1, 0.3]), np.array([0.1, -0.2, 0.1])
    r = kl_readout(kl, dp, [True, False, True], np.log([0.5, 0.5, 0.5]), np.log([0.25, 0.5, 1.0]))
    assert math.isclose(r["mean_kl"], 0.4 / 3) and math.isclose(r["same_top_share"], 2 / 3)
    # ln(PPL_Q / PPL_B) = mean(-ln q + ln p) = (ln 2 + 0 - ln 2) / 3
    assert math.isclose(r["ln_ppl_ratio"], 0.0, abs_tol=1e-15)
    assert list(percentiles([1.0, 2.0])) == [
        "max",
        "p99.9",
        "p99",
        "p95",
        "p90",
        "median",
        "p10",
        "p5",
        "p1",
        "p0.1",
        "min",
    ]
    with pytest.raises(ValueError, match="differ in length"):
        kl_readout(kl, dp[:2], [True] * 3, kl, kl)
