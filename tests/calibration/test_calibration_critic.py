"""Critic calibration on sampled tokens (`calibrate critic`, sample_smart.traces.critic) and the
decoder it gives (sample_smart.calibration.bucket_decoder, DecodeConfig.from_calibration).

The model tests use the embedded model (loaded once per module) on data generated here."""

import json

import numpy as np
import orjson
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import chisquare

from sample_smart import DecodeConfig
from sample_smart.calibration import BucketCalibrator
from sample_smart.calibration.bucket_decoder import (
    build_counts_file,
    counts_path,
    decoder_settings,
    isotonic,
    load_counts,
    merge,
    smallest_edge,
    summarize,
    write_calibration,
)
from sample_smart.cli import main
from sample_smart.traces import critic as C

PAIRS = [
    {"id": "a", "prompt": "What is 2 + 3?", "target": "2 + 3 = 5. The answer is 5."},
    {"id": "b", "prompt": "Tom has 4 apples and eats 1. How many are left?", "target": "4 - 1 = 3. The answer is 3."},
    {"id": "c", "prompt": "What is 6 times 7?", "target": "6 * 7 = 42. The answer is 42."},
]


def run(*args):
    return CliRunner().invoke(main, ["calibrate", *map(str, args)])


def pairs_to_buckets(conf, hit):
    b = np.minimum(np.floor(conf * 100), 99).astype(int)
    return (
        np.bincount(b, minlength=100),
        np.bincount(b, weights=hit, minlength=100).astype(int),
        np.bincount(b, weights=conf, minlength=100),
    )


def synthetic_counts(seed, n=3000, critic=None, bias=0.0):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0, 1, n) ** 2
    hit = rng.random(n) < np.clip(conf + bias, 0, 1)
    meta = {"sampled_from": C.SAMPLED_FROM, "critic": critic or C.Critic("p_sampled").describe(), "runs": []}
    return conf, hit, build_counts_file(meta, *pairs_to_buckets(conf, hit), float(hit.mean()))


# ---- the draw ---------------------------------------------------------------------------
def test_sampled_tokens_follow_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = torch.softmax(logits, 0).double().numpy()
    n = 40000
    ids, p = C.sample_rows(logits.expand(n, -1), torch.Generator().manual_seed(3))
    assert torch.equal(p[0], torch.softmax(logits, 0))
    observed = np.bincount(ids.numpy(), minlength=6)
    assert chisquare(observed, probs * n).pvalue > 1e-3
    # the same test rejects a draw from a different distribution (it can fail)
    wrong = np.bincount(
        C.sample_rows((logits * 0.8).expand(n, -1), torch.Generator().manual_seed(3))[0].numpy(), minlength=6
    )
    assert chisquare(wrong, probs * n).pvalue < 1e-6


def test_sampling_seeds_and_bad_rows():
    assert C.sequence_seed(0, 1) == C.sequence_seed(0, 1) != C.sequence_seed(0, 2) != C.sequence_seed(1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        C.sequence_seed(-1, 0)
    with pytest.raises(ValueError, match="non-finite"):
        C.sample_rows(torch.full((2, 5), float("nan")), torch.Generator())
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        C.sample_rows(torch.zeros(5), torch.Generator())


# ---- buckets, isotonic, merge, decoder ---------------------------------------------------
def test_isotonic_matches_sklearn_and_fills_empty_buckets():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    y = rng.random(100)
    w = rng.integers(0, 5, 100).astype(float)
    w[:3] = 0
    iso = isotonic(y, w)
    pop = np.flatnonzero(w > 0)
    ref = IsotonicRegression().fit(pop, y[pop], sample_weight=w[pop]).predict(pop)
    assert iso[pop] == pytest.approx(ref)
    assert np.all(np.diff(iso) >= 0)
    assert np.all(iso[:3] == iso[pop[0]])  # below the first populated bucket
    gap = np.flatnonzero((w == 0) & (np.arange(100) > pop[0]))[0]
    assert iso[gap] == iso[pop[pop < gap][-1]]  # an inner empty bucket: the populated one below it


def test_counts_file_agrees_with_the_pair_calibrator(tmp_path):
    conf, hit, data = synthetic_counts(0)
    cal = BucketCalibrator().fit(conf, hit)
    assert data["filled"] == pytest.approx(cal.filled_.tolist())
    assert data["ece"] == pytest.approx(cal.ece_) and data["mce"] == pytest.approx(cal.mce_)
    assert data["overall_accuracy_samples"] == data["overall_accuracy_buckets"] == pytest.approx(hit.mean())
    values, side = write_calibration(tmp_path / "x.json", data)
    arr = json.loads(values.read_text())
    assert side == counts_path(values) == tmp_path / "x.counts.json"
    assert len(arr) == 100 and all(0 <= v <= 1 for v in arr)
    with pytest.raises(RuntimeError, match="disagree"):
        build_counts_file({}, *pairs_to_buckets(conf, hit), float(hit.mean()) + 0.01)


def test_merge_adds_counts_and_refuses_other_critics(tmp_path):
    c1, h1, d1 = synthetic_counts(1)
    c2, h2, d2 = synthetic_counts(2)
    write_calibration(tmp_path / "one.json", d1)
    write_calibration(tmp_path / "two.json", d2)
    merged = merge([tmp_path / "one.json", tmp_path / "two.counts.json"])
    both = BucketCalibrator().fit(np.r_[c1, c2], np.r_[h1, h2])
    assert merged["counts"] == both.counts_.tolist()
    assert merged["filled"] == pytest.approx(both.filled_.tolist())
    res = run("critic-merge", tmp_path / "one.json", tmp_path / "two.json", "-o", tmp_path / "m.json")
    assert res.exit_code == 0, res.output
    assert load_counts(tmp_path / "m.json")["counts"] == merged["counts"]
    _, _, d3 = synthetic_counts(3, critic=C.Critic("p_max").describe())
    write_calibration(tmp_path / "three.json", d3)
    with pytest.raises(ValueError, match="critic"):
        merge([tmp_path / "one.json", tmp_path / "three.json"])
    res = run("critic-merge", tmp_path / "one.json", tmp_path / "one.counts.json", "-o", tmp_path / "m2.json")
    assert res.exit_code == 2 and "given twice" in res.output
    res = run("critic-merge", tmp_path / "one.json", "-o", tmp_path / "one.counts.json")
    assert res.exit_code == 2 and "overwrite" in res.output


def test_decoder_is_the_smallest_edge_of_the_monotone_accuracy(tmp_path):
    _, _, data = synthetic_counts(4, bias=0.05)
    values, _ = write_calibration(tmp_path / "b.json", data)
    iso = np.asarray(data["isotonic"])
    for c in (0.05, 0.3, 0.6, 0.9):
        eps = (
            DecodeConfig.from_calibration(str(values), mode="epsilon", threshold=c).prob_threshold or 0.0
        )  # 0 = off (keep all)
        k = int(round(eps * 100))
        assert iso[k] >= c and (k == 0 or iso[k - 1] < c)
    assert smallest_edge(np.full(100, 0.4), 0.5) == 1.0 and smallest_edge(np.full(100, 0.6), 0.5) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        decoder_settings(values, "epsilon", None)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        decoder_settings(values, "epsilon", 1.5)
    with pytest.raises(ValueError, match="mode 'epsilon'"):
        DecodeConfig.from_calibration(str(values), mode="topk", threshold=0.1)
    # p_max: Greedy-Threshold; a second model or the sampled prefix: no decoder
    for critic, mode, ok in (
        (C.Critic("p_max"), "greedy_threshold", True),
        (C.Critic("p_max"), "epsilon", False),
        (C.Critic("model", path="m"), "epsilon", False),
        (C.Critic("p_sampled", "sampled"), "epsilon", False),
    ):
        _, _, d = synthetic_counts(5, critic=critic.describe())
        v, _ = write_calibration(tmp_path / f"{critic.name}{critic.prefix}.json", d)
        if ok:
            assert set(decoder_settings(v, mode, 0.5)) == {"greedy_threshold"}
        else:
            with pytest.raises(ValueError, match="mode|does not score"):
                decoder_settings(v, mode, 0.5)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([0.5] * 100))
    with pytest.raises(ValueError):
        DecodeConfig.from_calibration(str(bare), mode="epsilon", threshold=0.5)


def test_committed_calibration_still_loads():
    cfg = DecodeConfig.from_calibration("docs/calibration/calibration.json", mode="epsilon", threshold=0.05)
    assert cfg.cal_acc is not None


# ---- the model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this 2-core machine is shared: one thread is several times faster here
    model, tok = C.load_model(C.resolve_model("-"))
    encoded = C.encode_all(tok, [C.Example(p["id"], p["prompt"], p["target"]) for p in PAIRS], chat_template=True)
    yield model, tok, encoded
    torch.set_num_threads(threads)


def calib(lm, **kw):
    model, tok, encoded = lm
    kw.setdefault("critic", C.Critic("p_sampled"))
    return C.run_critic_calibration(encoded, model, tok, progress=False, batch_size=2, **kw)


def test_seeds_critics_and_accuracies(lm):
    a = calib(lm, seed=7)
    again = calib(lm, seed=7)
    other = calib(lm, seed=8)
    assert a.sampled == again.sampled and a.draws_sha256 == again.draws_sha256
    assert a.sampled != other.sampled and a.draws_sha256 != other.draws_sha256
    gold = np.concatenate([e.target_ids for e in lm[2]])
    drawn = np.concatenate([a.sampled[e.id] for e in lm[2]])
    assert a.n_positions == gold.size and a.n_correct_samples == int((gold == drawn).sum())
    assert a.overall_accuracy_samples == pytest.approx(a.correct.sum() / a.counts.sum())
    # a second model that is the model itself scores exactly like p_sampled
    judged = calib(lm, seed=7, critic=C.Critic("model", path="-"), critic_model=lm[0])
    assert judged.sampled == a.sampled
    assert np.array_equal(judged.scores, a.scores) and np.array_equal(judged.counts, a.counts)
    top = calib(lm, seed=7, critic=C.Critic("p_max"))
    assert top.sampled == a.sampled and np.all(top.scores >= a.scores)
    # on the sampled sequence: the first target position has the same prefix (the prompt), later ones differ
    lines = []
    onsamp = calib(lm, seed=7, critic=C.Critic("p_sampled", "sampled"), verbose_every=2, echo=lines.append)
    assert len(lines) == 1 and lines[0].startswith("after 2 sequences") and "acc=" in lines[0]
    starts = np.cumsum([0] + [len(e.target_ids) for e in lm[2]])[:-1]
    assert np.allclose(onsamp.scores[starts], a.scores[starts], rtol=1e-5, atol=1e-7)
    assert drawn.tolist() != gold.tolist() and not np.allclose(onsamp.scores, a.scores)


def test_cli_same_seed_same_file(tmp_path, lm):  # lm: keeps the thread setting of the module
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PAIRS))
    outs = []
    for name in ("r1.json", "r2.json"):
        res = run("critic", "-", data, 2, "--seed", 5, "-o", tmp_path / name, "--no-progress", "--threads", 1)
        assert res.exit_code == 0, res.output
        outs.append(tmp_path / name)
    arr = json.loads(outs[0].read_text())
    assert len(arr) == 100 and all(isinstance(v, float) and 0 <= v <= 1 for v in arr)
    for p in outs:
        assert p.read_bytes() == outs[0].read_bytes()
        assert counts_path(p).read_bytes().replace(b"r2.json", b"r1.json") == counts_path(outs[0]).read_bytes()
    side = json.loads(counts_path(outs[0]).read_text())
    assert side["runs"][0]["n_sequences"] == 2 and side["critic"]["name"] == "p_sampled"
    assert side["sampled_from"]["temperature"] == 1.0
    acc = [line.split()[-1] for line in res.output.splitlines() if line.startswith("overall accuracy")]
    assert len(acc) == 2 and acc[0] == acc[1] == f"{side['overall_accuracy_buckets']:.6f}"
    assert summarize(side["counts"], side["correct"], side["score_sums"])["filled"] == arr


@pytest.fixture
def no_model_load(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(C, "load_model", fail)
    monkeypatch.delenv("SAMPLE_SMART_GSM8K_DIR", raising=False)


def test_bad_inputs_refused_before_the_model_loads(tmp_path, no_model_load):
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PAIRS))
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "notarget.jsonl").write_text('{"prompt": "x", "target": ""}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "latest.pt").write_bytes(b"x")
    cases = [
        (("-", data, 0), "NUM_SEQUENCES"),
        (("-", tmp_path / "nothing", 3), "looked for the file"),
        (("-", tmp_path, 3), "val.jsonl"),
        (("-", "gsm8k_fewshot", 3), "--data-dir"),
        (("-", tmp_path / "empty.jsonl", 3), "no examples"),
        (("-", tmp_path / "notarget.jsonl", 3), "notarget.jsonl:1"),
        ((tmp_path / "model", data, 3), "missing weights"),
        ((tmp_path / "ckpt" / "latest.pt", data, 3), "config"),
        ((tmp_path / "absent", data, 3), "no such file or folder"),
        (("-", data, 3, "--critic", "judge"), "critic must be"),
        (("-", data, 3, "-o", data), "overwrite"),
    ]
    for args, message in cases:
        res = run(
            "critic", *args, "-o" if "-o" not in args else "--seed", tmp_path / "o.json" if "-o" not in args else 0
        )
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_checkpoint_file_loads_its_weights_and_writes_beside_it(tmp_path, lm):
    import shutil

    from sample_smart.models import default_model_path

    model = lm[0]
    folder = default_model_path()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    ckpt = tmp_path / "latest.pt"
    torch.save({"model": model.state_dict(), "step": 3}, ckpt)
    src = C.resolve_model(str(ckpt))
    assert src.weights == ckpt and src.default_output == tmp_path / "latest.json"
    loaded, _ = C.load_model(src)  # the folder holds no weights: every parameter comes from the file
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    torch.save({"model": {"nonsense": torch.zeros(2)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit the config"):
        C.load_model(C.resolve_model(str(tmp_path / "bad.pt")))


def test_data_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMPLE_SMART_GSM8K_DIR", raising=False)
    arith = C.resolve_data("arith_mini", "train").examples(5)
    assert len(arith) == 5 and arith[0].id == "train-0" and "The answer is" in arith[0].target
    (tmp_path / "train.jsonl").write_text(
        '{"question": "q1", "answer": "a1 #### 1"}\n{"question": "q2", "answer": "a2"}\n'
    )
    (tmp_path / "test.jsonl").write_text('{"question": "t1", "answer": "b1 #### 2"}\n')
    g = C.resolve_data("gsm8k_fewshot", "train", tmp_path)
    assert [(e.prompt, e.target) for e in g.examples(9)] == [("q1", "a1 #### 1"), ("q2", "a2")]
    assert C.resolve_data("gsm8k_fewshot", "val", tmp_path).examples(9)[0].prompt == "t1"
    # a folder: val falls back to test.jsonl; a relative path resolves against the working directory
    monkeypatch.chdir(tmp_path.parent)
    folder = C.resolve_data(tmp_path.name, "val", prompt_field="question", target_field="answer")
    assert folder.path == tmp_path / "test.jsonl" and folder.examples(1)[0].target == "b1 #### 2"
    with pytest.raises(ValueError, match="split must be"):
        C.resolve_data("arith_mini", "dev")
