"""The processor inside a real vLLM engine (the session's shared ``llm``: CPU, embedded
SmolLM2-135M-Instruct fp32, vLLM's default raw_logprobs mode).

vLLM's seeded sampling draws from a per-request generator, and on this CPU build the
forward pass gives the same logits for a request whatever else is in the batch (checked
here: every "alone" comparison below relies on it), so a request's tokens are a function of
its prompt, its seed and its settings only.
"""

from __future__ import annotations

import pytest
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import MoveDirectionality

from sample_smart.integrations.vllm import sampling_params

pytestmark = pytest.mark.engine

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):",
    "Question: what is 12 + 30? Answer:",
]
TOKENS = 24

# At least four settings whose outputs differ from each other.
MIXED = [
    None,
    {"min_p": 0.1},
    {"top_k": 3, "temperature": 0.7},
    {"greedy_threshold": 0.5},
    {"prob_threshold": 0.02, "edt_var": "1.2,0.6,0.9"},
    {"dynamic_top_k": [1, 1, 2, 2, 3, 4, 5, 6, 8, 10]},
]


def tokens(outputs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


def generate(llm, prompts, params):
    return tokens(llm.generate(prompts, params, use_tqdm=False))


def test_forced_greedy_settings_equal_temperature_zero(llm):
    greedy = generate(llm, PROMPTS, SamplingParams(temperature=0.0, max_tokens=TOKENS))
    free = generate(llm, PROMPTS, [sampling_params(None, max_tokens=TOKENS, seed=7 + i) for i in range(4)])
    assert free != greedy  # these seeds do sample: the settings below must do the work
    for settings in ({"min_p": 1.0}, {"greedy_threshold": 1.0}, {"temperature": 0}, {"top_k": 1}):
        params = [sampling_params(settings, max_tokens=TOKENS, seed=7 + i) for i in range(4)]
        assert generate(llm, PROMPTS, params) == greedy, settings


def test_no_settings_is_vllm_sampling(llm):
    """Requests without settings (or with other plugins' extra_args) are not touched."""
    plain = [SamplingParams(max_tokens=TOKENS, seed=3 + i) for i in range(4)]
    other = [SamplingParams(max_tokens=TOKENS, seed=3 + i, extra_args={"unrelated": 1}) for i in range(4)]
    assert generate(llm, PROMPTS, other) == generate(llm, PROMPTS, plain)


def test_mixed_batch_rows_equal_each_config_alone(llm):
    def params(j, i):
        return sampling_params(MIXED[j], max_tokens=TOKENS, seed=1000 * j + i)

    alone = {j: generate(llm, PROMPTS, [params(j, i) for i in range(4)]) for j in range(len(MIXED))}
    # the configs really differ (a processor ignoring settings would make them equal to row 0's)
    assert len({str(v) for v in alone.values()}) == len(MIXED)
    # one batch, rows interleaved so that neighbours have different settings
    order = [(j, i) for i in range(4) for j in range(len(MIXED))]
    mixed = generate(llm, [PROMPTS[i] for j, i in order], [params(j, i) for j, i in order])
    for (j, i), got in zip(order, mixed):
        assert got == alone[j][i], (MIXED[j], PROMPTS[i])


def _run_engine(engine, schedule, max_steps=400):
    """Drive ``engine`` (vLLM's LLMEngine) step by step; ``schedule`` maps a step number to a
    list of (request_id, prompt, params) to add before that step. Returns token ids by id."""
    done: dict[str, list[int]] = {}
    step = 0
    pending = dict(schedule)
    while pending or engine.has_unfinished_requests():
        for rid, prompt, params in pending.pop(step, []):
            engine.add_request(rid, prompt, params)
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.outputs[0].token_ids)
        step += 1
        assert step < max_steps
    return done


def test_rows_follow_requests_joining_and_leaving(llm, llm_processor, monkeypatch):
    """Requests of different lengths join mid-generation and finish at different steps; vLLM
    compacts the batch (rows move) and may swap rows. Every request must still get exactly
    what it gets alone: with stale settings on a moved row, a free-sampling request would
    turn greedy (or the reverse) and its tokens would change."""
    settings = [
        {"min_p": 1.0},
        None,
        {"top_k": 2},
        {"min_p": 1.0},
        None,
        {"greedy_threshold": 1.0},
        {"min_p": 0.3},
        None,
        {"top_k": 1},
    ]
    max_tokens = [6, 30, 3, 14, 22, 9, 5, 12, 18]
    join_step = [0, 0, 0, 0, 2, 2, 5, 9, 9]
    reqs = []
    for k, (s, n) in enumerate(zip(settings, max_tokens)):
        prompt = PROMPTS[k % len(PROMPTS)]
        reqs.append((f"join-{k}", prompt, sampling_params(s, max_tokens=n, seed=50 + k, ignore_eos=True)))
    schedule: dict[int, list] = {}
    for req, step in zip(reqs, join_step):
        schedule.setdefault(step, []).append(req)

    seen_moves = []
    original = llm_processor.update_state

    def recording_update_state(batch_update):
        if batch_update is not None:
            seen_moves.extend(d for *_, d in batch_update.moved)
        return original(batch_update)

    monkeypatch.setattr(llm_processor, "update_state", recording_update_state)
    got = _run_engine(llm.llm_engine, schedule)
    monkeypatch.undo()

    assert MoveDirectionality.UNIDIRECTIONAL in seen_moves  # the scenario did move rows
    for rid, prompt, params in reqs:
        assert len(got[rid]) == params.max_tokens
        assert got[rid] == generate(llm, [prompt], params)[0], rid


BAD = [  # (extra_args, vLLM temperature, the field the error must name)
    ({"sample_smart": {"min_p": 2}}, 1.0, "min_p"),
    ({"sample_smart": {"no_such_knob": 1}}, 1.0, "no_such_knob"),
    ({"dynamic_top_k": [1, 2, 3]}, 1.0, "dynamic_top_k"),
    ({"sample_smart": {"temperature": 0.5}}, 0.7, "temperature"),
]


def test_bad_settings_refused_while_others_run(llm):
    engine = llm.llm_engine
    good = [
        (f"ok-{i}", PROMPTS[i], sampling_params({"min_p": 0.05}, max_tokens=10, seed=i, ignore_eos=True))
        for i in range(2)
    ]
    for rid, prompt, params in good:
        engine.add_request(rid, prompt, params)
    assert not any(o.finished for o in engine.step())  # the good requests are running
    for extra_args, temperature, field in BAD:
        bad = SamplingParams(max_tokens=10, temperature=temperature, extra_args=extra_args)
        with pytest.raises(VLLMValidationError, match=field):
            engine.add_request(f"bad-{field}", PROMPTS[2], bad)
    done = _run_engine(engine, {})
    assert set(done) == {rid for rid, *_ in good}
    # the running requests were not disturbed, and the engine serves the next ones
    for rid, prompt, params in good:
        assert done[rid] == generate(llm, [prompt], params)[0]
    for extra_args, temperature, field in BAD:
        bad = SamplingParams(max_tokens=4, temperature=temperature, extra_args=extra_args)
        with pytest.raises(VLLMValidationError, match=field):
            llm.generate(PROMPTS[:2], [SamplingParams(max_tokens=4), bad], use_tqdm=False)
    assert len(generate(llm, PROMPTS[:1], SamplingParams(max_tokens=4, seed=1, ignore_eos=True))[0]) == 4


def test_settings_sources_give_the_same_tokens(llm):
    """Nested dict, its JSON text (what the OpenAI server can carry) and the reference
    scripts' flat keys (with their aliases) are the same request."""
    nested = {"min_p": 0.1, "greedy_threshold": 0.4}
    variants = [
        {"sample_smart": nested},
        {"sample_smart": '{"min_p": 0.1, "greedy_threshold": 0.4}'},
        {"min_p": 0.1, "greedy_threshold": 0.4},
        {"min_p": 0.1, "selgreedy_thresh": 0.4},
    ]
    outs = [
        generate(llm, PROMPTS, [SamplingParams(max_tokens=TOKENS, seed=i, extra_args=v) for i in range(4)])
        for v in variants
    ]
    assert all(o == outs[0] for o in outs)
    assert outs[0] != generate(llm, PROMPTS, [SamplingParams(max_tokens=TOKENS, seed=i) for i in range(4)])
