"""process_core under torch.compile: it compiles with fullgraph=True (no graph breaks: no host
syncs, no data-dependent Python branches), and the compiled backend (SAMPLE_SMART_BACKEND=compiled)
gives the textbook kept sets, compiles once per flag combination whatever the batch size, keeps
the in-place contract, and refuses a bad backend name. Compiles take seconds: few, small shapes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from support import MIXED, REPO, check_against_reference, make_logits
from torch._dynamo.utils import counters

import sample_smart.processors.compiled as compiled
import sample_smart.processors.dispatch as dispatch
import sample_smart.processors.top_p as top_p_mod
from sample_smart import BatchState, DecodeConfig, process, process_core
from sample_smart.processors import get_backend, set_backend, warmup

# Every knob, each on rows of its own; top_p rows get flat logits (nucleus of hundreds of tokens,
# beyond the 128 candidates: the exact key-bisection fallback runs).
EVERY_KNOB = [
    {"top_p": 0.9},
    {"top_p": 0.5, "temperature": 0.7},
    {"top_p": 0.99, "min_p": 0.001},
    {"edt_var": "0.8,1.0,1.0", "prob_threshold": 1e-4},
    {"dynamic_top_k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
    {"top_k": 20, "min_p": 0.05},
    {"hewitt_epsilon": 1e-3},
    {"cal_acc": "-0.4,0.6,0.05"},
    {"greedy_threshold": 0.3},
    {"confidence_bin_only": 3},
    {"top_n_sigma": 1.5},
    {"temperature": 0},
    {},
]
VOCAB = 40000  # > 4 * 128 * 64: the two-level candidate selection runs, not a plain topk


@pytest.fixture
def compiled_backend():
    set_backend("compiled")
    yield
    set_backend(None)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _batch(cfgs: list[dict], seed: int) -> torch.Tensor:
    """float64 logits: flat rows for top-p configs, peaked rows (p_max over all deciles) otherwise."""
    flat = make_logits("random", len(cfgs), VOCAB, seed)
    peaked = make_logits("peaked", len(cfgs), VOCAB, seed + 1)
    use_flat = torch.tensor(["top_p" in c for c in cfgs]).unsqueeze(-1)
    return torch.where(use_flat, flat, peaked)


def test_compiled_process_core_matches_eager():
    """process_core itself traces into one graph (an engine compiling its own sampler)."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(MIXED), 3000, generator=g) * torch.linspace(0.5, 8, len(MIXED)).unsqueeze(-1)
    x[:, 2900:] = float("-inf")
    state = BatchState.from_configs([DecodeConfig.from_dict(d) for d in MIXED])
    eager = process_core(x, state)
    fn = torch.compile(process_core, fullgraph=True, dynamic=False)
    got = fn(x, state)
    assert torch.equal(torch.isfinite(got), torch.isfinite(eager))
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    assert (torch.isfinite(got).sum(-1) < 2900).any()  # the chain really truncated something


def test_compiled_backend_every_knob_matches_textbook_and_batch_size_does_not_recompile(compiled_backend):
    cfgs = [DecodeConfig.from_dict(d) for d in EVERY_KNOB]
    state = BatchState.from_configs(cfgs)
    assert warmup(state, VOCAB)  # compiles [13, V] and [1, V] (dynamo specialises batch 1)
    graphs = _graphs()
    seen_keys = compiled.compiled_count()
    cases = [
        (EVERY_KNOB, state, 0),
        (EVERY_KNOB + EVERY_KNOB[:4], BatchState.from_configs(cfgs + cfgs[:4]), 10),  # a new batch size
        (EVERY_KNOB[:1], state.rows(0, 1), 20),  # one row (every flag still set): compiled by warmup
    ]
    for rows, st, seed in cases:
        x = _batch(rows, seed).float()
        out = process_core(x, st)
        assert out.dtype == torch.float32 and out.shape == x.shape
        for i, c in enumerate(rows):  # decided as the float64 textbook rule, but for ties within 1e-4
            check_against_reference(x[i : i + 1].double(), out[i : i + 1], DecodeConfig.from_dict(c).to_dict())
        kept = torch.isfinite(out).sum(-1)
        flat_top_p = [i for i, c in enumerate(rows) if "top_p" in c]
        assert (kept[flat_top_p] > top_p_mod.CANDIDATES).any()  # the fallback really ran
        plain = [i for i, c in enumerate(rows) if not c]
        assert torch.equal(out[plain], x[plain])  # rows without a knob come back unchanged
        # eager on the same input: the same kept sets but for float rounding at a rule's boundary
        set_backend("eager")
        eager = process_core(x, st)
        set_backend("compiled")
        per_row = (torch.isfinite(out) != torch.isfinite(eager)).sum(-1)
        assert int(per_row.max()) <= 2, per_row  # float32 summation order at the boundary at most
    assert _graphs() == graphs, "a batch size seen by warmup (or a new one > 1) compiled again"
    assert compiled.compiled_count() == seen_keys


def test_inplace_contract(compiled_backend):
    state = BatchState.from_configs([DecodeConfig(min_p=0.05, temperature=0.8)] * 5)
    x = make_logits("peaked", 5, 3000, 3).float()
    x0 = x.clone()
    want = process_core(x, state)
    assert torch.equal(x, x0) and not torch.equal(want, x)  # out of place: a new tensor, input untouched
    y = x.clone()
    got = process_core(y, state, inplace=True)
    assert got.data_ptr() == y.data_ptr() and torch.equal(y, want)  # written into the input
    h = x.to(torch.bfloat16)
    h0 = h.clone()
    out = process_core(h, state, inplace=True)  # half precision: work in float32, new tensor
    assert out.dtype == torch.bfloat16 and out.data_ptr() != h.data_ptr() and torch.equal(h, h0)
    assert torch.equal(torch.isfinite(out), torch.isfinite(process_core(h0.float(), state)))


def test_flag_combinations_have_their_own_compile_budget(compiled_backend, monkeypatch, caplog):
    """With a budget of one compile per key, two flag sets still both run compiled (isolated
    regions); one more shape for a key warns and runs eager instead of failing."""
    compiled.reset()
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 1)
    x = make_logits("random", 4, 2000, 5).float()
    graphs = _graphs()
    for cfg in (DecodeConfig(min_p=0.1), DecodeConfig(min_p=0.1, temperature=0.5)):
        state = BatchState.from_configs([cfg] * 4)
        out = process_core(x, state)
        check_against_reference(x.double(), out, cfg.to_dict())
    assert _graphs() == graphs + 2 and compiled.compiled_count() == 2
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        one = BatchState.from_configs([DecodeConfig(min_p=0.1)])
        out = process_core(x[:1], one)  # batch 1: a second compile for this key, over the budget
    assert "recompile limit" in caplog.text and "rules [min_p]" in caplog.text
    check_against_reference(x[:1].double(), out, {"min_p": 0.1})
    compiled.reset()


def test_no_nested_compile_under_an_outer_compile(compiled_backend):
    state = BatchState.from_configs([DecodeConfig(top_k=5)] * 3)
    x = torch.randn(3, 700)
    before = compiled.compiled_count()
    outer = torch.compile(lambda t: process_core(t, state) * 1.0, fullgraph=True)
    got = outer(x)
    assert compiled.compiled_count() == before  # traced into the caller's graph, not compiled apart
    assert (torch.isfinite(got).sum(-1) == 5).all()


def test_backend_selection_and_bad_values(monkeypatch):
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    set_backend(None)
    assert get_backend() == "auto"  # the default
    set_backend("compiled")
    assert get_backend() == "compiled"
    with pytest.raises(ValueError, match=r"SAMPLE_SMART_BACKEND.*allowed 'auto', 'eager', 'compiled'"):
        set_backend("fast")
    assert get_backend() == "compiled"  # a refused value changes nothing
    monkeypatch.setenv(dispatch.BACKEND_ENV, "inductor")
    set_backend(None)  # re-read the environment
    x = torch.randn(2, 50)
    with pytest.raises(ValueError, match=r"SAMPLE_SMART_BACKEND='inductor' is invalid: allowed 'auto', 'eager'"):
        process(x, DecodeConfig(min_p=0.1))
    monkeypatch.setenv(dispatch.BACKEND_ENV, "Compiled")
    set_backend(None)
    assert get_backend() == "compiled"
    set_backend(None)


def test_bad_environment_value_does_not_break_import():
    env = dict(os.environ, SAMPLE_SMART_BACKEND="fastest")
    code = (
        "import torch, sample_smart\n"
        "try:\n"
        "    sample_smart.process(torch.randn(2, 9), sample_smart.DecodeConfig(min_p=0.1))\n"
        "except ValueError as e:\n"
        "    print('ERR', e)\n"
    )
    root = str(REPO)
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ERR SAMPLE_SMART_BACKEND='fastest' is invalid: allowed 'auto', 'eager', 'compiled'" in res.stdout


def test_warmup_is_a_no_op_on_the_eager_backend(monkeypatch):
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    set_backend("eager")
    before = compiled.compiled_count()
    assert not warmup(BatchState.from_configs([DecodeConfig(min_p=0.1)] * 2), 100)
    assert compiled.compiled_count() == before
    set_backend("compiled")
    with pytest.raises(ValueError, match="vocab_size"):
        warmup(BatchState.from_configs([DecodeConfig(min_p=0.1)] * 2), 0)
    set_backend(None)


def test_benchmark_backend_cases_are_labelled_and_compared():
    """benchmarks/processors.py --backend: ours under each backend, the compiled cases compared with
    the eager ones (and, compiled alone, the alternatives compared with the compiled ones)."""
    sys.path.insert(0, str(REPO))
    from benchmarks import processors as bench

    set_backend(None)
    before = get_backend()
    res = bench.run(
        shapes=((3, 500),),
        dtypes=("float32",),
        kinds=("peaked",),
        quick=True,
        with_transformers=False,
        with_vllm=False,
        only=["min_p"],
        backends=("eager", "compiled"),
        log=lambda _: None,
    )
    rows = {r["case"]: r for r in res["runs"][0]["results"]}
    assert rows["ours [compiled]: min_p"]["same_as"] == "ours: min_p"
    assert rows["ours [compiled]: min_p"]["mismatch"] == 0 and rows["naive (sort) min_p"]["mismatch"] == 0
    assert res["machine"]["backends"] == ["eager", "compiled"] and get_backend() == before  # restored
    first = bench.build_cases(3, "cpu", with_transformers=False, with_vllm=False, backends=("compiled", "eager"))
    names = {c.name: c for c in first}  # the first backend's cases are plain "ours: ..."
    assert "ours [compiled]: min_p" not in names and names["ours [eager]: min_p"].same_as == "ours: min_p"
    assert all(c.same_as in names for c in first if c.same_as is not None)


@pytest.mark.engine
def test_vllm_processor_follows_the_backend(llm, llm_processor, monkeypatch):
    """The vLLM processor calls process_core, so it runs compiled when the backend says so, and
    samples the same tokens (same kept sets, same seeds)."""
    from sample_smart.integrations.vllm import sampling_params

    calls = []
    run = compiled.run
    monkeypatch.setattr(compiled, "run", lambda *a: calls.append(a[0].shape) or run(*a))
    prompts = ["The capital of France is", "def fibonacci(n):"]

    def generate():
        params = [
            sampling_params({"min_p": 0.1, "top_k": 20}, max_tokens=6, seed=i, temperature=1.0)
            for i in range(len(prompts))
        ]
        return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]

    set_backend("eager")
    want = generate()
    assert not calls
    set_backend("compiled")
    try:
        got = generate()
    finally:
        set_backend(None)
    assert calls and all(len(shape) == 2 for shape in calls)  # every decode step went through it
    assert got == want
