"""The transformers adapter on the embedded model, through real ``model.generate``."""

import pytest
import torch

from sample_smart import DecodeConfig
from sample_smart.models import require_default_model

transformers = pytest.importorskip("transformers")
from sample_smart.integrations.transformers import generate_kwargs  # noqa: E402 (after the path/environment set-up above)

PROMPTS = ["The capital of France is", "Once upon a time,"]


@pytest.fixture(scope="module")
def hf():
    path = str(require_default_model())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    return tok, model, inputs


def _gen(model, inputs, seed, **kw):
    torch.manual_seed(seed)
    with torch.inference_mode():
        return model.generate(**inputs, max_new_tokens=12, pad_token_id=2, **kw)[:, inputs["input_ids"].shape[1] :]


def test_greedy_forcing_config_equals_greedy_decoding(hf):
    _, model, inputs = hf
    greedy = _gen(model, inputs, 0, do_sample=False)
    forced = _gen(model, inputs, 123, **generate_kwargs(DecodeConfig(min_p=1.0)))
    assert torch.equal(forced, greedy)


def test_min_p_equals_transformers_min_p_sampling(hf):
    _, model, inputs = hf
    ours = _gen(model, inputs, 7, **generate_kwargs(DecodeConfig(min_p=0.1)))
    theirs = _gen(model, inputs, 7, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, min_p=0.1)
    assert torch.equal(ours, theirs)
    plain = _gen(model, inputs, 7, **generate_kwargs(DecodeConfig(temperature=3.0)))
    assert not torch.equal(ours, plain)  # the comparison above can fail: seeds alone don't fix the text


def test_per_prompt_configs_with_return_sequences(hf):
    _, model, inputs = hf
    greedy = _gen(model, inputs, 0, do_sample=False)
    cfgs = [DecodeConfig(greedy_threshold=1.0), DecodeConfig(temperature=1.5)]
    out = _gen(model, inputs, 5, **generate_kwargs(cfgs, num_return_sequences=3))
    assert out.shape[0] == 6
    for j in range(3):  # every return sequence of prompt 0 is the greedy continuation
        assert torch.equal(out[j], greedy[0])
    assert len({tuple(r.tolist()) for r in out[3:]}) > 1  # prompt 1 really samples
