"""Every knob against its textbook definition (tests/reference_impls.py), on random and on
peaked logits, several shapes and dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_impls import kept_set
from support import check_against_reference, make_logits

from sample_smart import DecodeConfig, process

KNOBS = {
    "temperature": [{"temperature": 0.7}, {"temperature": 1.8}, {"temperature": 0}],
    "edt": [{"edt_var": [0.8, 1.0, 1.0]}, {"edt_var": [2.0, 0.5, 0.7], "min_p": 0.05}],
    "top_k": [{"top_k": 1}, {"top_k": 5}, {"top_k": 40}],
    "top_p": [{"top_p": 0.5}, {"top_p": 0.9}, {"top_p": 0.99}],
    "min_p": [{"min_p": 0.05}, {"min_p": 0.3}, {"min_p": 1.0}],
    "epsilon": [{"prob_threshold": 1e-3}, {"prob_threshold": 0.02}],
    "eta": [{"hewitt_epsilon": 1e-3}, {"hewitt_epsilon": 0.05}],
    "dynamic_top_k": [
        {"dynamic_top_k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
        {"dynamic_top_k": [0, 0, 3, 3, 5, 5, 20, 20, 40, 40]},
    ],
    "greedy_threshold": [{"greedy_threshold": 0.3}, {"greedy_threshold": 0.3, "min_p": 0.1}],
    "confidence_bin_only": [{"confidence_bin_only": b} for b in (1, 3, 10)],
    "cal_acc": [{"cal_acc": [-0.3, 0.5, 0.05]}, {"cal_acc": [-0.7, 0.8, 0.1], "cal_acc_base": "e"}],
    "top_n_sigma": [{"top_n_sigma": 1.0}, {"top_n_sigma": 2.5}],
    "top_a": [{"top_a": 0.2}, {"top_a": 1.0}, {"top_a": 0.05, "temperature": 0.7, "min_p": 0.02}],
    "temperature+truncation": [
        {"temperature": 0.6, "top_p": 0.8, "prob_threshold": 1e-3},
        {"temperature": 1.5, "min_p": 0.1, "hewitt_epsilon": 0.01},
    ],
}
CASES = [(name, cfg) for name, cfgs in KNOBS.items() for cfg in cfgs]


@pytest.mark.parametrize("kind", ["random", "peaked"])
@pytest.mark.parametrize("b,v", [(1, 50), (6, 257), (8, 4096)])
@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_knob_matches_textbook_fp32(name, cfg, kind, b, v):
    x64 = make_logits(kind, b, v, seed=b * 1000 + v)
    x32 = x64.float()
    out = process(x32, DecodeConfig.from_dict(cfg))
    assert out.dtype == torch.float32
    # the reference sees exactly the float32 values the processor saw
    check_against_reference(x32.double(), out, cfg)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,cfg", [c for c in CASES if c[0] not in ("edt",)], ids=lambda c: str(c))
def test_knob_matches_textbook_half(name, cfg, dtype):
    x = make_logits("peaked", 6, 300, seed=7).to(dtype)
    out = process(x, DecodeConfig.from_dict(cfg))
    assert out.dtype == dtype
    check_against_reference(x.double(), out, cfg)


def test_temperature_values_are_logits_over_t():
    x = make_logits("random", 3, 100, 1).float()
    out = process(x, DecodeConfig(temperature=0.5))
    torch.testing.assert_close(out, x / 0.5)


def test_edt_distribution_equals_textbook_temperature():
    x = make_logits("random", 4, 200, 2).float()
    n, theta, t0 = 0.8, 1.2, 0.9
    out = process(x, DecodeConfig(edt_var=(n, theta, t0)))
    for i in range(4):
        _, _, tempered = kept_set(x[i].double().numpy(), {"edt_var": [n, theta, t0]})
        want = torch.softmax(torch.from_numpy(tempered), -1)
        torch.testing.assert_close(torch.softmax(out[i].double(), -1), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n", [1e-8, 0.3, 1.0, 3.0, 1e8])
@pytest.mark.parametrize("theta", [-4.0, 0.0, 4.0])
def test_edt_never_overflows(n, theta):
    x = torch.randn(4, 128)
    x[0] = -1e4
    x[0, 3] = 50.0  # entropy ~ 0
    x[1] = 0.0  # uniform: maximal entropy
    x[2, 100:] = float("-inf")  # masked vocabulary padding
    x[3] *= 30.0
    out = process(x, DecodeConfig(edt_var=(n, theta, 0.7), min_p=0.01))
    assert not torch.isnan(out).any()
    assert not torch.isposinf(out).any()
    assert (torch.isfinite(out).sum(-1) >= 1).all()
    assert torch.equal(out.argmax(-1), x.argmax(-1))
    assert torch.isneginf(out[2, 100:]).all()


def test_row_without_knobs_is_unchanged_in_mixed_batch():
    x = make_logits("random", 3, 500, 3).float()
    cfgs = [DecodeConfig(temperature=0.5, top_k=3), DecodeConfig(), DecodeConfig(edt_var=(0.8, 1, 1))]
    out = process(x, cfgs)
    assert torch.equal(out[1], x[1])
    assert torch.equal(process(x, DecodeConfig()), x)


def test_masked_padding_rows_work():
    x = make_logits("random", 2, 300, 4).float()
    x[:, 250:] = float("-inf")
    for cfg in [
        {"top_p": 0.9},
        {"top_n_sigma": 1.0},
        {"top_k": 290},
        {"hewitt_epsilon": 0.01},
        {"dynamic_top_k": [300] * 10},
    ]:
        out = process(x, DecodeConfig.from_dict(cfg))
        assert not torch.isnan(out).any(), cfg
        assert torch.isneginf(out[:, 250:]).all(), cfg
        check_against_reference(x.double(), out, cfg)


@pytest.mark.parametrize("bad_row", [0, 2])
def test_nan_rows_raise(bad_row):
    x = torch.randn(3, 20)
    x[bad_row, 5] = math.nan
    with pytest.raises(ValueError, match=rf"rows \[{bad_row}\] contain NaN"):
        process(x, DecodeConfig(min_p=0.1))


def test_all_masked_row_raises():
    x = torch.randn(2, 20)
    x[1] = float("-inf")
    with pytest.raises(ValueError, match="no finite value"):
        process(x, DecodeConfig(min_p=0.1))


def test_wrong_number_of_configs():
    with pytest.raises(ValueError, match="got 2 configs for a batch of 3"):
        process(torch.randn(3, 10), [DecodeConfig()] * 2)


def test_reference_helper_detects_a_wrong_rule():
    """The checker itself can fail: a min-p result checked as if it were epsilon disagrees."""
    x = make_logits("peaked", 4, 200, 5).float()
    out = process(x, DecodeConfig(min_p=0.2))
    with pytest.raises(AssertionError):
        check_against_reference(x.double(), out, {"prob_threshold": 0.2 * 1e-3})


def test_inplace_matches_out_of_place():
    x = make_logits("random", 4, 300, 6).float()
    cfgs = [
        DecodeConfig(temperature=0.8, min_p=0.1),
        DecodeConfig(edt_var=(0.8, 1, 1), top_k=7),
        DecodeConfig(),
        DecodeConfig(top_p=0.9),
    ]
    want = process(x, cfgs)
    y = x.clone()
    got = process(y, cfgs, inplace=True)
    assert got.data_ptr() == y.data_ptr()
    torch.testing.assert_close(got, want)


def test_reference_near_set_is_small():
    """Boundary tolerance covers only a sliver of tokens, so the comparisons above are sharp."""
    x = make_logits("random", 8, 4096, 8)
    for cfg in [{"min_p": 0.05}, {"top_p": 0.9}, {"prob_threshold": 1e-3}]:
        near = sum(int(kept_set(x[i].numpy(), cfg)[1].sum()) for i in range(8))
        assert near <= 16, (cfg, near)  # of 8 x 4096 tokens
    assert np.all(kept_set(x[0].numpy(), {"top_k": 5})[0].sum() == 5)
