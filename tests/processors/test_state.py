"""BatchState: a state of selected rows equals the state built from those rows' configs, and the
per-config cache of host values changes nothing (an engine rebuilds its state from mostly the
same configs whenever a request joins or leaves)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import MIXED

from sample_smart import DecodeConfig
from sample_smart.processors import BatchState
from sample_smart.processors import state as state_mod
from sample_smart.processors.rules import RULES

CONFIGS = MIXED + [
    {"top_k": 300, "temperature": 0.7},
    {"top_n_sigma": 1.5, "hewitt_epsilon": 1e-3},
    {"cal_acc": "-0.4,0.6,0.05", "greedy_threshold": 0.3},
    {},
]


def _same(a: BatchState, b: BatchState) -> None:
    assert (a.batch_size, a.rules, a.candidates, a.row_candidates, a.row_rules) == (
        b.batch_size,
        b.rules,
        b.candidates,
        b.row_candidates,
        b.row_rules,
    )
    assert (a.any_temperature, a.any_edt) == (b.any_temperature, b.any_edt)
    for name in state_mod._ROW_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert sorted(a.params) == sorted(b.params)
    for name in b.params:
        assert torch.equal(a.params[name], b.params[name]), name


@pytest.mark.parametrize("rows", [[0], [3, 1], [len(CONFIGS) - 1, 0, 5, 5]])
def test_selected_rows_equal_the_state_of_their_configs(rows):
    cfgs = [DecodeConfig.from_dict(c) for c in CONFIGS]
    full = BatchState.from_configs(cfgs, vocab_size=50000)
    sub = full.select(rows)
    want = BatchState.from_configs([cfgs[i] for i in rows], vocab_size=50000)
    # the rows' own host values: their rules and candidates, as a state built from their configs
    assert sub.row_candidates == want.row_candidates and sub.candidates == want.candidates
    assert sub.rules == want.rules and sub.row_rules == want.row_rules
    for name in state_mod._ROW_FIELDS:
        assert torch.equal(getattr(sub, name), getattr(want, name)), name
    for name in want.params:
        assert torch.equal(sub.params[name], want.params[name]), name
    assert len(sub.params) == len(full.params) and set(sub.params) == set(full.params)


def test_the_per_config_cache_changes_nothing():
    cfgs = [DecodeConfig.from_dict(c) for c in CONFIGS]
    state_mod._cached_row_values.cache_clear()
    first = BatchState.from_configs(cfgs, vocab_size=1000)
    again = BatchState.from_configs([DecodeConfig.from_dict(c) for c in CONFIGS], vocab_size=1000)  # equal, new objects
    assert state_mod._cached_row_values.cache_info().hits >= len(CONFIGS)
    _same(again, first)
    # the vocabulary is part of the key: top_k 300 of a 200-token vocabulary is off
    small = BatchState.from_configs(cfgs, vocab_size=200)
    assert small.candidates <= 200 and small.candidates != first.candidates


def test_row_slices_and_tiles_keep_the_rows_host_values():
    cfgs = [DecodeConfig.from_dict(c) for c in CONFIGS]
    full = BatchState.from_configs(cfgs, vocab_size=50000)
    part = full.rows(2, 5)
    assert part.row_rules == full.row_rules[2:5] and part.row_candidates == full.row_candidates[2:5]
    assert part.rules == full.rules  # a slice keeps the batch's code path
    tiled = full.rows(0, 2).tiled(3)
    assert tiled.row_rules == full.row_rules[:2] * 3 and tiled.batch_size == 6
    # the last four configs: the rules whose row values are on (temperature 0.7 is no greedy row)
    want = [frozenset(r.name for r in RULES if r.row(c, 50000) is not None) for c in cfgs[-4:]]
    assert full.row_rules[-4:] == tuple(want) and [len(r) for r in want] == [1, 2, 2, 0]
    assert {"top_k"} == want[0] and "top_n_sigma" in want[1] and "greedy_threshold" in want[2]


def test_no_rows():
    empty = BatchState.from_configs([])
    assert empty.batch_size == 0 and empty.temperature.shape == (0,) and not empty.rules


def test_every_row_holds_its_rules_values_or_the_neutral_ones():
    """The layout from the rule table: row i of a rule's parameter is ``rule.row(config_i)[j]``, or the
    parameter's neutral value when the rule is off for that row; the batch's rules are the union of
    the rows' in table order and its candidates the largest row's need."""
    cfgs = [DecodeConfig.from_dict(c) for c in CONFIGS]
    state = BatchState.from_configs(cfgs, vocab_size=50000)
    for rule in RULES:
        for i, cfg in enumerate(cfgs):
            values = rule.row(cfg, 50000)
            for j, param in enumerate(rule.params):
                want = param.neutral if values is None else values[j]
                got = state.params[param.name][i]
                want_t = torch.tensor(want if not param.width or values is not None else [want] * param.width)
                assert torch.equal(got, want_t.to(param.dtype)), (rule.name, param.name, i)
    used = [r.name for r in RULES if any(r.row(c, 50000) is not None for c in cfgs)]
    assert state.rules == tuple(used) and state.candidates == max(state.row_candidates) > 0
    want_t = [c.temperature if c.temperature and c.edt_var is None else 1.0 for c in cfgs]
    assert torch.equal(state.temperature, torch.tensor(want_t)) and state.any_temperature


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(CONFIGS) - 1), min_size=1, max_size=12), st.data())
def test_a_rearranged_state_equals_the_state_built_from_its_configs(rows, data):
    """Requests leave or move (every config one of the previous rows'): the gathered state is the
    one from_configs builds, host values included, and it can be rearranged again."""
    cfgs = [DecodeConfig.from_dict(CONFIGS[i]) for i in rows]
    old = BatchState.from_configs(cfgs, vocab_size=50000)
    picked = data.draw(st.lists(st.integers(0, len(cfgs) - 1), min_size=1, max_size=len(cfgs)))
    new = [cfgs[i] for i in picked]
    got = old.rearranged(new, vocab_size=50000)
    assert got is not None
    _same(got, BatchState.from_configs(new, vocab_size=50000))
    assert got.row_configs == tuple(new)
    again = got.rearranged(new[::-1], vocab_size=50000)
    _same(again, BatchState.from_configs(new[::-1], vocab_size=50000))


def test_a_state_is_not_rearranged_for_a_new_config_or_another_vocabulary():
    cfgs = [DecodeConfig.from_dict(c) for c in CONFIGS]
    old = BatchState.from_configs(cfgs, vocab_size=50000)
    equal_but_new = DecodeConfig.from_dict(CONFIGS[0])  # a request that joined: its own config object
    assert old.rearranged([cfgs[1], equal_but_new], vocab_size=50000) is None
    assert old.rearranged(cfgs[:2], vocab_size=200) is None  # top_k 300 would be off there
    assert old.rearranged([], vocab_size=50000) is None
    # derived states do not know their rows' configs: their own rows would be misread
    assert old.rows(1, 3).rearranged(cfgs[1:3], vocab_size=50000) is None
    assert old.select([2, 0]).rearranged([cfgs[0]], vocab_size=50000) is None
