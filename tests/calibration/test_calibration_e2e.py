"""Issue 5 item 7, end to end on the embedded model and the session's vLLM engine:

text the project generates (sampled at temperature 1 from SmolLM2-135M-Instruct) ->
teacher forcing (vLLM backend, raw distribution) -> `sample-smart calibrate grid` ->
`calibrate fit` -> Calibrated-TopK and Calibrated-epsilon decoders from the calibration
file -> `process` on real logits and generation in vLLM, where every sampled token must
lie in the kept set of the raw distribution (temperature 1, so raw = tempered).
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from sample_smart import DecodeConfig, process
from sample_smart.calibration import load_calibration, load_decoder_settings
from sample_smart.cli import main
from sample_smart.integrations.vllm import sampling_params

pytestmark = pytest.mark.engine

PROMPTS = [
    "Write two sentences about the moon.",
    "Explain what a prime number is.",
    "Tom has 7 apples and gives 3 away. How many apples does he have left?",
    "Describe a rainy afternoon in a small town.",
    "List three uses of a paperclip.",
    "Why do leaves change colour in autumn?",
    "What is 15 times 4? Show your work.",
    "Write a short note thanking a friend for a gift.",
]
TOKENS = 64


def _generate(llm, settings, seed0):
    params = [
        sampling_params(settings, max_tokens=TOKENS, temperature=1.0, seed=seed0 + i, logprobs=1)
        for i in range(len(PROMPTS))
    ]
    return [o.outputs[0] for o in llm.generate(PROMPTS, params, use_tqdm=False)]


def _steps(outputs):
    """(sampled token's raw logprob, its raw rank, raw p_max) for every generated token."""
    for out in outputs:
        for tok, entry in zip(out.token_ids, out.logprobs):
            top = max(entry.values(), key=lambda lp: lp.logprob)
            yield entry[tok].logprob, entry[tok].rank, math.exp(top.logprob)


def test_traces_to_calibration_to_decoders(llm, tmp_path):
    from sample_smart.traces.examples import Example
    from sample_smart.traces.teacher_forcing import run_teacher_forcing
    from sample_smart.traces.vllm_backend import VLLMTeacherForcer

    # 1. generate text with the embedded model, 2. teacher-force it (raw distribution, top-20)
    texts = [o.text for o in _generate(llm, None, seed0=100)]
    examples = [Example(id=f"gen{i}", prompt=p, target=t) for i, (p, t) in enumerate(zip(PROMPTS, texts)) if t]
    traces = tmp_path / "tf.jsonl"
    counts = run_teacher_forcing(
        examples, VLLMTeacherForcer(llm, top_k=20), traces, chat_template=False, progress=False
    )
    assert counts["tokens"] >= 250

    # 3. grid and fit through the CLI, as a user runs them
    cli = CliRunner()
    res = cli.invoke(main, ["calibrate", "grid", str(traces), "-o", str(tmp_path / "grid.json")])
    assert res.exit_code == 0, res.output
    res = cli.invoke(
        main,
        [
            "calibrate",
            "fit",
            str(tmp_path / "grid.json"),
            "-o",
            str(tmp_path / "calib.json"),
            "--n-boot",
            "200",
            "--min-samples",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    grid, fit, _ = load_calibration(tmp_path / "calib.json")
    assert grid.n_tokens == counts["tokens"] and fit.base == "e" and fit.B > 0

    # 4. the two decoders, from the file
    topk = load_decoder_settings(tmp_path / "calib.json", "topk", 0.05)["dynamic_top_k"]
    eps_settings = load_decoder_settings(tmp_path / "calib.json", "epsilon", 0.05)
    c_min = 0.05
    log_eps = (math.log(c_min) - fit.A) / fit.B  # ln of the equivalent epsilon (base e fit)
    cfg_k = DecodeConfig.from_calibration(str(tmp_path / "calib.json"), mode="topk", threshold=0.05)
    cfg_e = DecodeConfig.from_calibration(str(tmp_path / "calib.json"), mode="epsilon", threshold=c_min)
    assert list(cfg_k.dynamic_top_k) == topk and cfg_e.cal_acc is not None

    # 5a. through `process`, on the model's own logits for the generated text
    tok = llm.get_tokenizer()
    import transformers

    from sample_smart.models import require_default_model

    model = transformers.AutoModelForCausalLM.from_pretrained(require_default_model(), dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([tok(PROMPTS[0] + texts[0]).input_ids])).logits[0]
    probs = torch.softmax(logits.double(), -1)
    argmax = logits == logits.max(-1, keepdim=True).values
    kept_e = torch.isfinite(process(logits, cfg_e))
    margin = (probs.log() - log_eps).abs() > 1e-4
    assert torch.equal(kept_e[margin], ((probs.log() >= log_eps) | argmax)[margin])
    bins = torch.clamp((probs.max(-1).values * 10).floor().long(), max=9)
    kept_k = torch.isfinite(process(logits, cfg_k)).sum(-1)
    assert kept_k.tolist() == [topk[9 - b] for b in bins.tolist()]

    # 5b. through vLLM: every sampled token is in the decoder's kept set of the raw distribution
    for settings in (eps_settings, {"dynamic_top_k": topk}):
        n = 0
        for logprob, rank, p_max in _steps(_generate(llm, settings, seed0=200)):
            n += 1
            if "cal_acc" in settings:
                assert rank == 1 or logprob >= log_eps - 1e-4, (logprob, rank, settings)
            else:
                b = min(math.floor(10 * p_max), 9)
                near_edge = abs(10 * p_max - round(10 * p_max)) < 1e-4
                assert near_edge or rank <= topk[9 - b], (rank, p_max, topk)
        assert n >= 100
    # the same seeds without the decoder do sample outside the epsilon kept set (the check can fail)
    plain = list(_steps(_generate(llm, None, seed0=200)))
    assert any(rank > 1 and logprob < log_eps for logprob, rank, _ in plain)
