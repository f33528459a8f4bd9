"""SampleSmartLogitsProcessor driven directly with real vLLM objects (no engine).

- v1: sequences of ``BatchUpdate`` (removed, added, moved UNIDIRECTIONAL and SWAP) as vLLM's
  persistent batch emits them; after each, the per-row configs and ``apply`` must equal the
  core's ``process`` on the rows' current requests.
- Model Runner V2 (cannot run end to end without Triton/GPU): ``add_request`` per slot and
  ``apply(logits, LogitsContext)`` with a slot mapping; the result must equal the core's
  ``process`` on the distribution after vLLM's temperature (the v1 semantics).
- admission: ``validate_params`` messages, settings sources, the temperature-twice rule.
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    LogitsProcRequestState,
)
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

from sample_smart import DecodeConfig
from sample_smart.integrations.vllm import (
    SampleSmartLogitsProcessor,
    config_from_params,
    sampling_params,
)
from sample_smart.processors import process

VOCAB = 64

# Settings that each change a row differently (the rows must not be confusable).
SETTINGS = [
    None,
    {"min_p": 1.0},
    {"top_k": 3},
    {"min_p": 0.2, "temperature": 0.7},
    {"greedy_threshold": 0.5, "prob_threshold": 0.01},
    {"edt_var": "1.5,0.5,0.8"},
    {"dynamic_top_k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
]


def params_for(settings, **kw) -> SamplingParams:
    return SamplingParams(extra_args={"sample_smart": settings} if settings else None, **kw)


def cfg_for(settings) -> DecodeConfig:
    return DecodeConfig.from_dict(settings)


@pytest.fixture(scope="module")
def vllm_config():
    return VllmConfig()


def test_one_class_implements_both_interfaces():
    assert issubclass(SampleSmartLogitsProcessor, V1LogitsProcessor)
    assert issubclass(SampleSmartLogitsProcessor, V2LogitsProcessor)


# ------------------------------------------------------------------------------- v1
def _emulate_batch(rng: random.Random, n_steps: int):
    """Yield (BatchUpdate, list of request ids by row) like vLLM's persistent batch:
    removals leave holes, additions fill the lowest holes then append, condensing moves the
    last rows into the holes (UNIDIRECTIONAL), and the attention backend may swap rows."""
    batch: list[int | None] = []
    next_id = 0
    for _ in range(n_steps):
        removed, added, moved = [], [], []
        live = [i for i, r in enumerate(batch) if r is not None]
        for i in rng.sample(live, k=rng.randint(0, len(live))) if live and rng.random() < 0.6 else []:
            batch[i] = None
            removed.append(i)
        for _ in range(rng.randint(0, 3)):
            holes = [i for i, r in enumerate(batch) if r is None]
            index = holes[0] if holes else len(batch)
            if index == len(batch):
                batch.append(None)
            batch[index] = next_id
            added.append((index, next_id))
            next_id += 1
        # condense: move the last live rows into the holes
        while None in batch:
            hole = batch.index(None)
            last = max((i for i, r in enumerate(batch) if r is not None), default=-1)
            if last < hole:
                del batch[hole:]
                break
            batch[hole], batch[last] = batch[last], None
            moved.append((last, hole, MoveDirectionality.UNIDIRECTIONAL))
        if len(batch) >= 2 and rng.random() < 0.5:
            a, b = rng.sample(range(len(batch)), 2)
            batch[a], batch[b] = batch[b], batch[a]
            moved.append((a, b, MoveDirectionality.SWAP))
        yield removed, added, moved, list(batch)


@pytest.mark.parametrize("seed", range(6))
def test_v1_rows_follow_removed_added_moved_swapped(vllm_config, seed, monkeypatch):
    """Every step's output equals ``process`` on the rows' configs; a step where no request joined
    gathers the previous state's rows instead of building one (``BatchState.rearranged``)."""
    rng = random.Random(seed)
    proc = SampleSmartLogitsProcessor(VllmConfig(), torch.device("cpu"), False)
    assert proc.runner == "v1" and not proc.duplicate
    builds = []
    build = proc._rows.BatchState.from_configs
    monkeypatch.setattr(
        proc._rows, "BatchState", SimpleNamespace(from_configs=lambda *a, **k: builds.append(1) or build(*a, **k))
    )
    settings_of: dict[int, object] = {}
    saw_swap = saw_move = False
    gathered = 0
    for removed, added, moved, batch in _emulate_batch(rng, 40):
        built_before = len(builds)
        had_state = proc._rows._state is not None
        adds = []
        for index, req in added:
            settings_of[req] = rng.choice(SETTINGS)
            adds.append((index, params_for(settings_of[req]), [1, 2], []))
        proc.update_state(BatchUpdate(batch_size=len(batch), removed=removed, added=adds, moved=moved))
        saw_swap |= any(d == MoveDirectionality.SWAP for *_, d in moved)
        saw_move |= any(d == MoveDirectionality.UNIDIRECTIONAL for *_, d in moved)
        expected = [cfg_for(settings_of[r]) for r in batch]
        assert proc._rows.configs == expected
        if batch:
            logits = torch.randn(len(batch), VOCAB, generator=torch.Generator().manual_seed(len(batch)))
            want = process(logits.clone(), expected)
            got = proc.apply(logits.clone())
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            if had_state and not added and proc._n_active:
                assert len(builds) == built_before  # rows gathered, nothing built
                gathered += 1
        proc.update_state(None)  # no change: state kept
        assert proc._rows.configs == expected
    assert saw_swap and saw_move and gathered


def test_v1_noop_batch_returns_logits_untouched():
    proc = SampleSmartLogitsProcessor(VllmConfig(), torch.device("cpu"), False)
    proc.update_state(
        BatchUpdate(
            batch_size=2,
            removed=[],
            added=[(0, SamplingParams(), None, []), (1, SamplingParams(extra_args={"other_plugin": 3}), None, [])],
            moved=[],
        )
    )
    logits = torch.randn(2, VOCAB)
    assert proc.apply(logits) is logits
    assert proc.is_argmax_invariant()


def test_second_copy_in_one_engine_is_inactive():
    vc = VllmConfig()
    first = SampleSmartLogitsProcessor(vc, torch.device("cpu"), False)
    second = SampleSmartLogitsProcessor(vc, torch.device("cpu"), False)
    assert not first.duplicate and second.duplicate
    update = BatchUpdate(batch_size=1, removed=[], added=[(0, params_for({"temperature": 0.5}), None, [])], moved=[])
    first.update_state(update)
    second.update_state(update)
    logits = torch.randn(1, VOCAB)
    once = first.apply(logits.clone())
    torch.testing.assert_close(second.apply(once.clone()), once)  # not tempered twice
    other_engine = SampleSmartLogitsProcessor(VllmConfig(), torch.device("cpu"), False)
    assert not other_engine.duplicate


# ------------------------------------------------------------------------------- V2
def _v2_processor(vllm_config, max_num_reqs=8):
    # The token buffers of the real RequestState need pinned memory (an accelerator); the
    # processor reads only device and max_num_reqs, so the rest stays empty here.
    req_states = LogitsProcRequestState(
        device=torch.device("cpu"),
        max_num_reqs=max_num_reqs,
        vocab_size=VOCAB,
        all_token_ids=None,
        prompt_len=None,
        prefill_len=None,
        total_len=None,
    )
    return SampleSmartLogitsProcessor(vllm_config, req_states)


def _ctx(slots: list[int]) -> LogitsContext:
    idx = torch.tensor(slots, dtype=torch.int32)
    n = len(slots)
    return LogitsContext(
        expanded_idx_mapping=idx,
        idx_mapping=idx,
        idx_mapping_np=np.array(slots, dtype=np.int32),
        expanded_local_pos=torch.zeros(n, dtype=torch.int32),
        input_ids=torch.zeros(n, dtype=torch.int32),
        pos=torch.zeros(n, dtype=torch.int64),
        seq_lens_upper_bound_np=np.ones(n, dtype=np.int32),
    )


def _v1_semantics(logits: torch.Tensor, configs, temps) -> torch.Tensor:
    """What V2's custom stage must output so that after vLLM divides by T, the row equals the
    v1 path (vLLM temperature first, then the processor)."""
    t = torch.tensor([tt if tt > 0 else 1.0 for tt in temps])[:, None]
    return process(logits / t, list(configs)) * t


def test_v2_slots_mapping_and_vllm_temperature():
    proc = _v2_processor(VllmConfig())
    assert proc.runner == "v2"
    # min_p and epsilon depend on the temperature they see (top-k would not)
    slot_settings = {
        0: SETTINGS[1],
        2: None,
        3: {"min_p": 0.3, "prob_threshold": 0.02},
        5: {"hewitt_epsilon": 0.05},
        6: SETTINGS[4],
        7: SETTINGS[5],
    }
    slot_temp = {0: 1.0, 2: 0.6, 3: 0.5, 5: 1.6, 6: 0.0, 7: 1.0}
    for slot, s in slot_settings.items():
        wants = proc.add_request(slot, params_for(s, temperature=slot_temp[slot]))
        assert wants == (s is not None)
    g = torch.Generator().manual_seed(0)
    temperature_mattered = False
    for slots in ([0, 2, 3, 5, 6, 7], [7, 5, 0], [6, 3, 2]):
        logits = torch.randn(len(slots), VOCAB, generator=g) * 3
        configs = [cfg_for(slot_settings[s]) for s in slots]
        temps = [slot_temp[s] for s in slots]
        got = proc.apply(logits.clone(), _ctx(slots))
        want = _v1_semantics(logits, configs, temps)
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
        # ignoring vLLM's temperature would give other kept sets (checked over all batches)
        temperature_mattered |= not torch.equal(torch.isinf(got), torch.isinf(process(logits, configs)))
    assert temperature_mattered

    # a recycled slot is fully re-initialised by add_request
    assert not proc.add_request(3, params_for(None))
    logits = torch.randn(2, VOCAB, generator=g)
    torch.testing.assert_close(proc.apply(logits.clone(), _ctx([3, 5])), logits)
    proc.add_request(5, params_for({"top_k": 1}))
    got = proc.apply(logits.clone(), _ctx([3, 5]))
    assert torch.isfinite(got[1]).sum() == 1 and torch.isfinite(got[0]).all()


def test_v2_speculative_rows_follow_expanded_mapping():
    proc = _v2_processor(VllmConfig())
    proc.add_request(1, params_for({"top_k": 2}))
    proc.add_request(2, params_for(None))
    # request in slot 1 has three rows (draft tokens), slot 2 one
    expanded = [1, 1, 1, 2]
    ctx = LogitsContext(
        expanded_idx_mapping=torch.tensor(expanded, dtype=torch.int32),
        idx_mapping=torch.tensor([1, 2], dtype=torch.int32),
        idx_mapping_np=np.array([1, 2], dtype=np.int32),
        expanded_local_pos=torch.tensor([0, 1, 2, 0], dtype=torch.int32),
        input_ids=torch.zeros(4, dtype=torch.int32),
        pos=torch.zeros(4, dtype=torch.int64),
        seq_lens_upper_bound_np=np.ones(2, dtype=np.int32),
    )
    logits = torch.randn(4, VOCAB)
    got = proc.apply(logits.clone(), ctx)
    assert torch.isfinite(got).sum(dim=1).tolist() == [2, 2, 2, VOCAB]


def test_v2_second_copy_declines_requests():
    vc = VllmConfig()
    _first, second = _v2_processor(vc), _v2_processor(vc)  # the first must stay alive (weakly registered)
    assert second.duplicate and not second.add_request(0, params_for({"top_k": 1}))


# ------------------------------------------------------------------------------- admission
@pytest.mark.parametrize(
    "extra_args, field",
    [
        ({"sample_smart": {"min_p": 2}}, "min_p"),
        ({"sample_smart": {"top_p": 0}}, "top_p"),
        ({"sample_smart": {"no_such_knob": 1}}, "no_such_knob"),
        ({"sample_smart": {"edt_var": "1,2"}}, "edt_var"),
        ({"min_p": -0.5}, "min_p"),
        ({"selgreedy_thresh": 3}, "greedy_threshold"),
        ({"sample_smart": 5}, "sample_smart"),
        ({"sample_smart": "{not json"}, "sample_smart"),
        ({"sample_smart": {"min_p": 0.1}, "top_k": 3}, "top_k"),
    ],
)
def test_validate_params_names_the_field(extra_args, field):
    with pytest.raises(ValueError, match=field):
        SampleSmartLogitsProcessor.validate_params(SamplingParams(extra_args=extra_args))


@pytest.mark.parametrize("settings", [{"temperature": 0.5}, {"edt_var": "1.5,0.5,0.8"}])
@pytest.mark.parametrize("vllm_temperature", [0.0, 0.7, 1.3])
def test_temperature_is_never_applied_twice(settings, vllm_temperature):
    with pytest.raises(ValueError, match="temperature would be applied twice"):
        SampleSmartLogitsProcessor.validate_params(params_for(settings, temperature=vllm_temperature))
    with pytest.raises(ValueError, match="temperature"):
        sampling_params(settings, temperature=vllm_temperature)
    SampleSmartLogitsProcessor.validate_params(params_for(settings, temperature=1.0))
    # truncation-only settings combine with any vLLM temperature (they act on its output)
    SampleSmartLogitsProcessor.validate_params(params_for({"min_p": 0.1}, temperature=vllm_temperature))


def test_settings_sources_agree():
    want = DecodeConfig.from_dict({"min_p": 0.1, "greedy_threshold": 0.3})
    sources = [
        {"sample_smart": {"min_p": 0.1, "greedy_threshold": 0.3}},
        {"sample_smart": json.dumps({"min_p": 0.1, "greedy_threshold": 0.3})},
        {"min_p": 0.1, "greedy_threshold": 0.3, "unrelated_plugin_key": "x"},
        {"min_p": 0.1, "selgreedy_thresh": 0.3},
    ]
    for extra in sources:
        assert config_from_params(SamplingParams(extra_args=extra)) == want
    assert config_from_params(SamplingParams()).is_noop
    assert config_from_params(SamplingParams(extra_args={"unrelated_plugin_key": 1})).is_noop
    sp = sampling_params(want, max_tokens=5, seed=3, extra_args={"other": 1})
    assert sp.max_tokens == 5 and sp.seed == 3 and sp.extra_args["other"] == 1
    assert config_from_params(sp) == want
    assert sampling_params({"min_p": 0.1}).extra_args == sampling_params(DecodeConfig(min_p=0.1)).extra_args
    assert sampling_params(None).extra_args is None
