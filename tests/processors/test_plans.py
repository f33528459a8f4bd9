"""The default backend's fixed programs (sample_smart.processors.plans): after `prepare`, every knob
combination runs through a handful of compiled programs and nothing ever compiles again; the kept
sets equal the eager chain's and the textbook rules; without a compiler the library falls back
to eager with one warning. One prepare (tens of seconds cold) serves the module."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import threading

import pytest
import torch
from support import MIXED, REPO, check_against_reference, make_logits
from torch._dynamo.utils import counters

from sample_smart import BatchState, DecodeConfig, process, process_core
from sample_smart.processors import chain, get_backend, native, native_top_p, plans, prepare, set_backend

VOCAB = 40000  # > 4 * 128 * 64: the two-level candidate selection runs


@pytest.fixture(scope="module")
def prepared():
    set_backend(None)
    assert get_backend() == "auto"
    for inplace in (False, True):
        assert prepare(VOCAB, torch.float32, "cpu", inplace=inplace) is not None
    assert plans.prepare(VOCAB, torch.float32, "cpu", inplace=True) == 0.0  # once per signature
    yield
    plans.forget(VOCAB)  # later modules test the eager chain on this vocabulary
    assert plans.fallbacks() == 0  # no call of the module had to leave the prepared programs


def _graphs() -> tuple[int, int]:
    """Compiled graphs of the plans' programs (dynamo's cache entries), and all graphs dynamo made."""
    return plans.compiled_programs(), counters["stats"]["unique_graphs"]


def _record_searches(monkeypatch) -> list[tuple[str, int]]:
    """``(route, rows)`` of every top-p search a call makes: ``"native"`` (the CPU float32 kernel,
    the rows it reads) or ``"program"`` (the search program, the rows it is given)."""
    searched = []
    kernel, program = native_top_p.top_p_rows, plans._search_rows

    def recorded_kernel(x, rows, *a, **k):
        found = kernel(x, rows, *a, **k)
        if found is not None:
            searched.append(("native", rows.shape[0]))
        return found

    def recorded_program(sig, rows, *a):
        searched.append(("program", rows[0].shape[0]))
        return program(sig, rows, *a)

    monkeypatch.setattr(native_top_p, "top_p_rows", recorded_kernel)
    monkeypatch.setattr(plans, "_search_rows", recorded_program)
    return searched


def _random_config(rng: random.Random) -> dict:
    """A random subset of the knobs with random (valid) values: one of the 2^12 combinations."""
    choices = {
        "temperature": lambda: rng.choice([0, 0.5, 0.7, 1.3]),
        "edt_var": lambda: f"{rng.uniform(0.5, 2):.3f},{rng.uniform(0.1, 1.5):.3f},{rng.uniform(0.5, 1.5):.3f}",
        "top_k": lambda: rng.choice([1, 5, 50, 128, 300, 1024]),
        "top_p": lambda: rng.choice([0.3, 0.9, 0.95, 0.99]),
        "min_p": lambda: rng.choice([0.01, 0.1, 0.3]),
        "prob_threshold": lambda: rng.choice([1e-5, 1e-4, 3e-3]),
        "hewitt_epsilon": lambda: rng.choice([1e-4, 1e-3]),
        "cal_acc": lambda: rng.choice(["-0.4,0.6,0.05", "0.1,0.9,0.2"]),
        "greedy_threshold": lambda: rng.choice([0.2, 0.5]),
        "confidence_bin_only": lambda: rng.randint(1, 10),
        "top_n_sigma": lambda: rng.choice([0.5, 1.5, 3.0]),
        "dynamic_top_k": lambda: [rng.randint(0, 60) for _ in range(10)],
        "top_a": lambda: rng.choice([0.05, 0.2]),
    }
    keys = rng.sample(sorted(choices), rng.randint(0, 5))
    return {k: choices[k]() for k in keys}


def _batch(cfgs: list[dict], seed: int) -> torch.Tensor:
    """float32 logits: flat rows for top-p configs (nuclei beyond the candidates: the search runs),
    peaked rows (p_max over all deciles) otherwise."""
    flat = make_logits("random", len(cfgs), VOCAB, seed)
    peaked = make_logits("peaked", len(cfgs), VOCAB, seed + 1)
    use_flat = torch.tensor(["top_p" in c for c in cfgs]).unsqueeze(-1)
    return torch.where(use_flat, flat, peaked).float()


def _same_as_eager(x: torch.Tensor, state: BatchState, got: torch.Tensor) -> None:
    want = chain.run(x.clone(), state, False)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    kept = torch.isfinite(want)
    assert torch.allclose(got[kept], want[kept], rtol=1e-6, atol=1e-6)


def test_the_threshold_program_takes_its_exp_pass_from_the_native_kernel(prepared, monkeypatch):
    """A float32 CPU batch's row statistics come from native_stats' kernel, called from inside the
    compiled program: once per call, also for a batch of top-p rows (whose flat rows the native
    top-p kernel reads from the raw logits: no program keeps exp for a search), twice when every
    row uses EDT (the untempered rows' entropy first, then the tempered rows' exp terms at the
    known max) and when a few rows do (their untempered entropy, read in place by the EDT-rows
    program); the kept sets stay the eager chain's."""
    calls = []
    real = native.function
    monkeypatch.setattr(native, "function", lambda name, *a: calls.append(name) or real(name, *a))
    cases = [
        ([{"greedy_threshold": 0.3, "min_p": 0.1}, {"cal_acc": "-0.4,0.6,0.05"}, {"hewitt_epsilon": 1e-3}], 1),
        ([{"edt_var": "0.8,1.0,1.0", "min_p": 0.05}] * 3, 2),
        ([{"temperature": 0.7, "prob_threshold": 3e-4}, {"edt_var": "0.8,1.0,1.0"}, {}, {"min_p": 0.2}], 2),
        ([{"top_p": 0.9}] * 3, 1),
    ]
    for i, (cfgs, n_calls) in enumerate(cases):
        x = _batch(cfgs, seed=40 + i)
        state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
        calls.clear()
        with torch.no_grad():
            got = process_core(x, state)
        assert calls.count("ss_row_exp_sums_f32") == n_calls, cfgs
        assert calls.count("ss_top_p_rows_f32") == ("top_p" in cfgs[0]), cfgs
        if "top_p" not in cfgs[0]:  # top-p's s: the native exp pass here, torch's sum in eager
            _same_as_eager(x, state, got)


def test_every_knob_matches_eager_and_the_textbook_after_prepare(prepared):
    cfgs = MIXED + [{"top_p": 0.9}, {"top_p": 0.5, "temperature": 0.7}, {"top_a": 0.1, "top_k": 300}]
    x = _batch(cfgs, 0)
    state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
    assert state.candidates > plans.CANDIDATES and plans.prepared(x, False)  # top_k 300: a second selection
    before = _graphs()
    got = process_core(x.clone(), state)
    assert _graphs() == before  # prepared: nothing compiles
    _same_as_eager(x, state, got)
    for i, cfg in enumerate(cfgs):
        check_against_reference(x[i : i + 1].double(), got[i : i + 1], DecodeConfig.from_dict(cfg).to_dict())


def test_no_compile_after_prepare_for_a_stream_of_random_knob_combinations(prepared):
    """Requests choose their settings: whatever combination and batch size arrive, the prepared
    programs serve them (a top_k above CANDIDATES selects its rows apart) and no
    graph is ever compiled again."""
    rng = random.Random(1)
    before = _graphs()
    large_k = 0
    for step in range(24):
        cfgs = [_random_config(rng) for _ in range(rng.randint(1, 7))]
        x = _batch(cfgs, 100 + step)
        state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
        inplace = step % 2 == 0
        large_k += state.candidates > plans.CANDIDATES
        got = process_core(x.clone() if inplace else x, state, inplace=inplace)
        _same_as_eager(x, state, got)
    assert _graphs() == before, "a program compiled after prepare"
    assert large_k >= 2  # the stream also took the second selection, of top_k > CANDIDATES


def test_after_prepare_the_programs_run_their_one_graph_without_the_compile_wrapper(prepared, monkeypatch):
    """Each prepared region holds one graph, whose bytecode the calls run directly: a stream of
    random knob combinations never enters torch.compile's wrapper, and gives eager's kept sets; a
    call with a size the graph was not made for (1 on a dynamic dimension) is left to the wrapper,
    which refuses it instead of running the graph on it."""
    ours = {k: v for k, v in plans._regions.items() if k[1] == VOCAB}
    assert ours and all(k in plans._direct for k in ours)
    entered = []
    region_of = plans._region
    monkeypatch.setattr(plans, "_region", lambda *a: entered.append(a[0]) or region_of(*a))
    rng = random.Random(5)
    for step in range(10):
        cfgs = [_random_config(rng) for _ in range(rng.randint(2, 7))]
        x = _batch(cfgs, 300 + step)
        state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
        _same_as_eager(x, state, process_core(x.clone(), state, inplace=True))
    assert entered == []
    key = (VOCAB, torch.float32, "cpu", False, True, False)  # write, in place, no top-n-sigma
    one = [torch.zeros(1, VOCAB), torch.zeros(1), torch.ones(1), torch.zeros(1)]
    assert not plans._shapes[("write",) + key].fit(plans._tensors_in((*one, True, None), states=False))
    with torch.no_grad(), torch.compiler.set_stance("fail_on_recompile"), pytest.raises(RuntimeError) as refused:
        plans._call("write", plans.write, key, *one, True, None)
    assert plans.refused_recompile(refused.value) and entered == ["write"]


def test_rows_asking_for_more_candidates_are_selected_once_with_their_own_k(prepared, monkeypatch):
    """The rows whose rules read candidates are selected in one call, each row as far as its own
    need (top-p's CANDIDATES, a top_k or dynamic top-k; a row with top-p and a larger top_k reads
    its top_k's, also for top-p's first stage); a row that reads none is not selected. Kept sets
    as eager, top-p's search included."""
    cfgs = [{"top_k": 300, "top_p": 0.9}, {"top_k": 1024}, {"top_p": 0.95}, {"top_k": 20}, {"min_p": 0.1}]
    x = _batch(cfgs, 7)
    state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
    selected = []
    largest = plans.largest_values

    def recorded(x, k, cmax, rows, ks):
        selected.append((k, rows.tolist(), ks.tolist()))
        return largest(x, k, cmax, rows, ks)

    monkeypatch.setattr(plans, "largest_values", recorded)
    searched = _record_searches(monkeypatch)
    got = process_core(x.clone(), state)
    assert selected == [(1024, [0, 1, 2, 3], [300, 1024, plans.CANDIDATES, 20])]
    # the flat top-p rows' nuclei exceed their candidates: the native kernel searched them
    assert searched and all(route == "native" for route, _ in searched), searched
    _same_as_eager(x, state, got)
    for i, cfg in enumerate(cfgs):
        check_against_reference(x[i : i + 1].double(), got[i : i + 1], DecodeConfig.from_dict(cfg).to_dict())


@pytest.mark.parametrize("few", [True, False])
def test_few_edt_and_top_p_rows_are_computed_on_those_rows_alone(prepared, monkeypatch, few):
    """On CPU a batch whose EDT rows and top-p rows are at most half of it takes the plan without
    them: their temperatures and tempered rows are computed eagerly on those rows alone, and the
    search sees only them; a batch with more of them takes the fused plan. Kept sets as eager."""
    edt, top_p = {"edt_var": "0.8,1.0,1.0", "min_p": 0.05}, {"top_p": 0.9, "temperature": 0.8}
    few_cfgs = [edt, top_p, {"top_k": 20}, {}, {}, {"hewitt_epsilon": 1e-3}]
    cfgs = few_cfgs if few else [{**edt, **top_p}, {**edt, "top_p": 0.95}, edt, top_p, {}]
    x = _batch(cfgs, 5)
    state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
    assert plans.Plan.of(state) == ("rows" if few else "all", not few)
    searched = _record_searches(monkeypatch)
    before = _graphs()
    got = process_core(x.clone(), state)
    assert _graphs() == before
    n_top_p = sum("top_p" in c for c in cfgs)
    # the kernel reads the top-p rows whose nuclei exceed their candidates, and no other row
    assert [route for route, _ in searched] == ["native"] and 1 <= searched[0][1] <= n_top_p, searched
    if few:
        assert searched == [("native", 1)]
    _same_as_eager(x, state, got)  # whose top-p rows take the same kernel


def test_top_p_rows_the_search_cannot_settle_are_exact_on_both_routes(prepared, monkeypatch):
    """A row whose crossing hides among 4000 nearly equal logits off the sample's stride: the CPU
    kernel settles it exactly in the prepared programs; without the kernel (the route of a device,
    another dtype, no library) the search leaves it inexact and the bisection finishes it, exactly."""
    import top_p_rows

    from sample_smart.processors import top_p as top_p_mod

    calls = []
    bisect = top_p_mod._bisect_keys
    monkeypatch.setattr(top_p_mod, "_bisect_keys", lambda *a: calls.append(1) or bisect(*a))
    x64 = torch.stack([top_p_rows.adversarial_row(VOCAB), make_logits("random", 1, VOCAB, seed=1)[0]])
    for p in (0.5, 0.9):
        searched = _record_searches(monkeypatch)
        out = process(x64.float(), DecodeConfig(top_p=p))
        assert [route for route, _ in searched] == ["native"] and not calls
        check_against_reference(x64, out, {"top_p": p})
    monkeypatch.setattr(native_top_p, "applies", lambda x: False)
    set_backend("eager")  # the search program was never needed on CPU float32: it is not prepared
    try:
        for p in (0.5, 0.9):
            calls.clear()
            out = process(x64.float(), DecodeConfig(top_p=p))
            assert calls, "the adversarial row must need the bisection"
            check_against_reference(x64, out, {"top_p": p})
    finally:
        set_backend(None)


def test_inplace_and_one_row(prepared):
    cfg = DecodeConfig(min_p=0.1, temperature=0.7)
    x = _batch([{}], 7)
    state = BatchState.from_configs([cfg], vocab_size=VOCAB)
    y = x.clone()
    out = process_core(y, state, inplace=True)
    assert out is y  # written into the caller's buffer
    _same_as_eager(x, state, out)
    fresh = process_core(x, state)
    assert fresh is not x and torch.equal(torch.isfinite(fresh), torch.isfinite(out))


def test_a_slice_or_subset_of_a_state_runs_as_its_own_rows(prepared):
    """``state.rows(a, b)`` and ``state.select(rows)`` on the matching logits give what the whole
    batch gives on those rows, through the programs (no fallback, no new graph), also when the
    rows picked read no candidates while the batch's other rows do."""
    rng = random.Random(11)
    before, fell = _graphs(), plans.fallbacks()
    for trial in range(6):
        dicts = [{"top_k": 5}, {"min_p": 0.1}, {}] + [_random_config(rng) for _ in range(rng.randint(0, 4))]
        rng.shuffle(dicts)
        cfgs = [DecodeConfig.from_dict(d) for d in dicts]
        state = BatchState.from_configs(cfgs, vocab_size=VOCAB)
        x = _batch(dicts, 40 + trial)
        whole = process_core(x, state)
        b = len(cfgs)
        for a, z in [(i, j) for i in range(b) for j in range(i + 1, b + 1)]:
            got = process_core(x[a:z].contiguous(), state.rows(a, z))
            assert torch.equal(torch.isfinite(got), torch.isfinite(whole[a:z])), (dicts, a, z)
        for rows in (rng.sample(range(b), rng.randint(1, b)) for _ in range(4)):
            got = process_core(x[rows], state.select(rows))
            assert torch.equal(torch.isfinite(got), torch.isfinite(whole[rows])), (dicts, rows)
    assert plans.fallbacks() == fell and _graphs() == before


def test_signatures_not_prepared_run_eager_and_compile_nothing(prepared):
    before = _graphs()
    with torch.inference_mode():  # prepared outside inference mode only: dynamo guards on it
        x = torch.randn(3, VOCAB)
        assert not plans.prepared(x, False)
        state = BatchState.from_configs([DecodeConfig(min_p=0.1)] * 3, vocab_size=VOCAB)
        _same_as_eager(x, state, process_core(x, state))
    cfg = DecodeConfig(top_p=0.9, min_p=0.05)
    for x in (torch.randn(3, 5000), torch.randn(3, VOCAB, dtype=torch.float64), torch.randn(VOCAB, 3).T):
        state = BatchState.from_configs([cfg] * 3, vocab_size=x.shape[-1])
        assert plans.run(x, state, False) is None  # other vocabulary, dtype, or a strided view
        _same_as_eager(x, state, process_core(x, state))
    assert _graphs() == before


def test_inputs_not_laid_out_as_prepared_never_reach_the_programs(prepared):
    """The programs run without dynamo's guards, so what the guards would have refused must be
    refused before: a state of other rows, a hand-built state whose tensors have another dtype,
    shape or stride, logits that need grad or are inference tensors outside ``inference_mode``.
    Each runs eager (the same kept sets), nothing compiles, and nothing counts as a fallback."""
    cfgs = [DecodeConfig(min_p=0.1, top_k=50), DecodeConfig(top_p=0.9), DecodeConfig(top_n_sigma=1.0)]
    state = BatchState.from_configs(cfgs, vocab_size=VOCAB)
    x = _batch([{}] * 3, 12)
    assert state.has_layout(x.device) and plans.run(x.clone(), state, False) is not None
    dyn_k = torch.empty(10, 3, dtype=torch.int64).t()  # [3, 10], not contiguous
    dyn_k.copy_(state.params["dyn_k"])
    odd_states = [
        dataclasses.replace(state, temperature=state.temperature.double()),
        dataclasses.replace(state, params={**state.params, "top_k": state.params["top_k"].int()}),
        dataclasses.replace(state, params={**state.params, "dyn_k": dyn_k}),
        dataclasses.replace(state, params={k: v for k, v in state.params.items() if k != "log_top_a"}),
        dataclasses.replace(state, params={**state.params, "n_sigma": state.params["n_sigma"][:2]}),
    ]
    before, fell = _graphs(), plans.fallbacks()
    for odd in odd_states:
        assert not odd.has_layout(x.device) and plans.run(x.clone(), odd, False) is None
    assert plans.run(x[:2].clone(), state, False) is None  # two rows, a state of three
    assert plans.run(x.clone().requires_grad_(), state, False) is None
    with torch.inference_mode():
        inference_x = x.clone()
    assert plans.run(inference_x, state, False) is None  # an inference tensor outside inference_mode
    _same_as_eager(x, state, process_core(x.clone().requires_grad_(), state).detach())
    assert _graphs() == before and plans.fallbacks() == fell


def test_a_state_built_in_the_other_grad_mode_still_takes_the_programs(prepared, monkeypatch):
    """A state made inside ``inference_mode`` (inference tensors) used outside it: dynamo guards on
    the tensors' kind, so without a copy in the call's mode every program would miss (eager)."""
    with torch.inference_mode():
        state = BatchState.from_configs([DecodeConfig(min_p=0.1, edt_var=(0.8, 1.0, 1.0))] * 3, vocab_size=VOCAB)
    assert state.temperature.is_inference()
    x = _batch([{}] * 3, 11)
    calls, before, fell = [], _graphs(), plans.fallbacks()
    run = plans._run_compiled
    monkeypatch.setattr(plans, "_run_compiled", lambda *a: calls.append(a[1]) or run(*a))
    for _ in range(2):
        _same_as_eager(x, state, process_core(x, state))
    assert plans.fallbacks() == fell and _graphs() == before and len(calls) == 2
    assert calls[0] is calls[1] and not calls[0].temperature.is_inference()  # one copy, kept


def test_without_a_cxx_compiler_the_library_falls_back_with_one_warning():
    """The compiler made unavailable to the process: prepare says so once and the eager chain runs."""
    code = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from sample_smart import DecodeConfig, process\n"
        "from sample_smart.processors import chain, prepare, BatchState\n"
        "assert prepare(2000) is None and prepare(2000) is None\n"
        "x = torch.randn(3, 2000)\n"
        "cfg = DecodeConfig(top_p=0.9, min_p=0.05)\n"
        "out = process(x, cfg)\n"
        "want = chain.run(x.clone(), BatchState.from_configs([cfg] * 3), False)\n"
        "assert torch.equal(torch.isfinite(out), torch.isfinite(want))\n"
        "print('OK')\n"
    )
    env = dict(os.environ, CXX="/nonexistent/c++", SAMPLE_SMART_BACKEND="auto")
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr[-2000:]
    assert res.stderr.count("compiled processor programs are not available (no C++ compiler") == 1, res.stderr


def test_process_uses_the_prepared_programs(prepared, monkeypatch):
    """The public API goes through the same dispatch: once prepared, process() takes the plans."""
    calls = []
    run = plans._run_compiled
    monkeypatch.setattr(plans, "_run_compiled", lambda *a: calls.append(a[0].shape) or run(*a))
    x = _batch([{}, {}], 3)
    out = process(x, DecodeConfig(min_p=0.1, top_k=40))
    assert calls == [x.shape] and (torch.isfinite(out).sum(-1) <= 40).all()


def test_half_precision_and_a_vocabulary_off_the_chunk_grid():
    """bfloat16 logits and a vocabulary that is no multiple of the chunk width and too small for
    two-level selection of all the candidates (top-p's 128 come from one topk, top-k 50's from the
    chunk maxima, with the partial last chunk): the same kept sets and values as the eager chain."""
    vocab = 20007
    assert prepare(vocab, torch.bfloat16, "cpu", inplace=False) is not None
    cfgs = MIXED + [{"top_p": 0.9}, {"top_k": 50, "top_n_sigma": 1.0}, {"top_k": 300}, {"dynamic_top_k": [3] * 10}]
    x = make_logits("peaked", len(cfgs), vocab, 3).to(torch.bfloat16)
    state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=vocab)
    try:
        before = _graphs()
        got = plans.run(x, state, False)
        assert got is not None and _graphs() == before and got.dtype == torch.bfloat16
        want = chain.run(x.clone(), state, False)
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        assert torch.equal(got[torch.isfinite(want)], want[torch.isfinite(want)])
    finally:
        plans.forget(vocab)


def test_the_rows_using_a_rule_come_from_host_values_as_the_tensors_say():
    """The subsets of rows the programs run (EDT, top-p, top-n-sigma rows) are read from a state's
    host values, not its tensors: the same rows, but for a row that names a rule at its neutral
    value (a no-op there), for states from the configs and rearranged ones; a state without host
    values reads its tensors."""
    rng = random.Random(3)
    for _ in range(30):
        cfgs = [DecodeConfig.from_dict(_random_config(rng)) for _ in range(rng.randint(1, 8))]
        cfgs += [DecodeConfig(top_p=1.0)]
        state = BatchState.from_configs(cfgs, vocab_size=VOCAB)
        moved = state.rearranged(cfgs[::-1], VOCAB)
        for st in (state, moved):
            for rule in ("edt", "top_p", "top_n_sigma"):
                if rule == "edt":
                    on = st.edt
                else:
                    first = plans.RULES_BY_NAME[rule].params[0]
                    on = st.params[first.name] != first.neutral
                host = plans._rows_using(st, rule)
                assert set(on.nonzero().squeeze(1).tolist()) <= set(host)
                for i in set(host) - set(on.nonzero().squeeze(1).tolist()):
                    assert rule == "top_p" and st.row_configs[i].top_p == 1.0
        assert plans._rows_using(state.tiled(2), "edt") is None  # no records: its tensors are read


def test_top_p_first_stage_reads_each_row_only_as_far_as_its_own_candidates():
    """The candidates program's top-p stage on a row with ``width`` candidates gives the same tau,
    need and smallest candidate whatever lies past them (-inf from the native selection, the
    row's next values from topk, anything else)."""
    from sample_smart.processors import top_p

    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        x = torch.randn(6, 300, generator=g) * (0.5 + trial % 4)
        values = torch.topk(x, 300).values
        width = torch.tensor([1, 5, 40, 128, 300, 77])
        m = values[:, 0]
        s = (x - m.unsqueeze(-1)).exp().sum(-1)
        p = torch.tensor([0.9, 0.5, 0.99, 0.3, 1.0, 0.95])
        want = [
            top_p.candidate_tau(values[r : r + 1, : int(w)], m[r : r + 1], s[r : r + 1], p[r : r + 1], w.view(1), 300)
            for r, w in enumerate(width)
        ]
        past = torch.arange(300).unsqueeze(0) >= width.unsqueeze(-1)
        for filler in (float("-inf"), 1e9, float("nan")):
            got = top_p.candidate_tau(values.masked_fill(past, filler), m, s, p, width, 300)
            for r in range(6):
                assert [t[r].item() for t in got] == [t[0].item() for t in want[r]], (trial, filler, r)


@pytest.mark.parametrize("edt", ["none", "rows", "all"])
@pytest.mark.parametrize("uses_top_p", [False, True])
def test_prepare_checks_every_dynamic_size_with_other_values(edt, uses_top_p):
    """prepare() runs each plan again, guards evaluated, on a batch whose every dynamic size differs
    from the one it compiled with (batch, candidate rows, largest k, EDT rows, sigma rows): a
    program that specialised one of them fails there instead of serving calls it does not fit."""

    def sizes(extra: int) -> dict:
        cfgs = plans._prepare_configs(edt, uses_top_p, extra=extra)
        state = BatchState.from_configs(cfgs, vocab_size=VOCAB)
        assert plans.Plan.of(state) == (edt, uses_top_p)
        out = {"batch": state.batch_size}
        if state.candidates:
            index, _, _, k = plans._candidate_rows(state)
            out.update({"candidate rows": index.numel(), "k": k})
        if state.uses("top_n_sigma"):
            out["sigma rows"] = plans._sigma_rows(state).numel()
        if edt == "rows":
            out["edt rows"] = plans._two_rows_at_least(plans._few_rows(state, "edt")).numel()
        return out

    compiled, checked = sizes(1), sizes(3)
    assert compiled.keys() == checked.keys()
    assert all(compiled[name] != checked[name] for name in compiled), (compiled, checked)
    assert all(size >= 2 for size in (*compiled.values(), *checked.values()))  # no 0/1 specialisation


def test_a_top_p_batch_whose_rows_need_no_search_takes_the_programs(prepared):
    """Most rows on top-p (the candidates -> search -> write order) and peaked rows, whose nuclei
    lie within their candidates: no search runs (none on zero rows), no call leaves the programs."""
    cfgs = [{"top_p": 0.5}, {"top_p": 0.9, "temperature": 0.8}, {"top_p": 0.95, "top_k": 40}]
    x = torch.randn(len(cfgs), VOCAB, generator=torch.Generator().manual_seed(11))
    x[:, :4] += torch.tensor([20.0, 19.0, 18.5, 18.0])  # nearly all the mass on 4 tokens
    state = BatchState.from_configs([DecodeConfig.from_dict(c) for c in cfgs], vocab_size=VOCAB)
    assert plans.Plan.of(state).top_p
    before = plans.fallbacks()
    for inplace in (False, True):
        got = plans.run(x.clone(), state, inplace)
        assert got is not None and plans.fallbacks() == before
        _same_as_eager(x, state, got)


def test_a_refused_recompile_is_recognised_with_and_without_guard_evaluation():
    """Dynamo's refusals under run()'s stances (guards evaluated, and skipped: a size-0 call of a
    graph compiled for dynamic sizes) both count as 'run eager', not as an error."""
    fn = torch.compile(lambda t: t * 2.0, fullgraph=True, dynamic=None)
    t = torch.ones(3)
    torch._dynamo.maybe_mark_dynamic(t, 0)
    fn(t)
    refused = []
    for stance in ({}, {"skip_guard_eval_unsafe": True}):
        with torch.compiler.set_stance("fail_on_recompile", **stance):
            try:
                fn(torch.ones(0) if stance else torch.ones(3, dtype=torch.float64))
            except RuntimeError as exc:
                refused.append(plans.refused_recompile(exc))
    assert refused == [True, True]
    assert not plans.refused_recompile(RuntimeError("something else"))


def test_prepare_starts_inductors_isa_check_in_a_thread_whose_result_the_compile_reads(monkeypatch):
    """The vector-ISA check (child processes, ~1 s) runs beside the first program's tracing: a
    thread calls inductor's cached function, and a later call in this thread is a cache hit."""
    import functools

    from torch._inductor import cpu_vec_isa

    threads = []

    @functools.cache
    def check():
        threads.append(threading.current_thread().name)
        return ["probed"]

    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", check)
    probe = plans._probe_vector_isa()
    assert probe is not None and probe.name != threading.current_thread().name
    probe.join()
    assert check() == ["probed"] and threads == [probe.name]  # computed once, in the thread
    assert plans._probe_vector_isa() is None  # cached already: no thread
