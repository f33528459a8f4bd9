"""The CPU fast path of the processors (row blocks, the row-by-row write) and top-p's search for
flat rows, where the nucleus is far larger than the candidate set, as run on CPU and as run on CUDA,
agree with each other and with the textbook definitions."""

from __future__ import annotations

import pytest
import torch
from support import check_against_reference, make_logits

import sample_smart.processors.cpu_blocks as cpu_blocks
import sample_smart.processors.top_p as top_p_mod
from sample_smart import DecodeConfig, process
from sample_smart.processors import BatchState, native_top_p, process_core

MIXED = [
    {"top_p": 0.9},
    {"top_p": 0.5, "temperature": 0.7},
    {"top_p": 0.99, "min_p": 0.001},
    {},
    {"edt_var": "0.8,1.0,1.0", "hewitt_epsilon": 1e-3, "dynamic_top_k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
    {"top_p": 0.95, "top_k": 30},
    {"top_n_sigma": 1.0, "temperature": 1.3},
    {"top_p": 0.3},
]


@pytest.fixture(autouse=True)
def cpu_fast_path(monkeypatch):
    """These tests exercise the opt-in CPU fast path (see sample_smart.processors.cpu_blocks)."""
    from sample_smart.processors import set_cpu_fast_path

    set_cpu_fast_path(True)
    yield
    set_cpu_fast_path(None)


def _flat(b: int, v: int, seed: int) -> torch.Tensor:
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.0


@pytest.mark.parametrize("kind", ["random", "peaked"])
def test_row_blocks_equal_one_block(monkeypatch, kind):
    x = make_logits(kind, len(MIXED), 9000, seed=3).float()
    state = BatchState.from_configs([DecodeConfig.from_dict(d) for d in MIXED])
    whole = process_core(x, state)
    monkeypatch.setattr(cpu_blocks, "CPU_BLOCK_ELEMENTS", 2 * 9000 + 17)  # 2 rows a block, ragged end
    blocks = process_core(x, state)
    assert torch.equal(torch.isfinite(blocks), torch.isfinite(whole))
    torch.testing.assert_close(blocks, whole)
    y = x.clone()
    assert process_core(y, state, inplace=True).data_ptr() == y.data_ptr()
    torch.testing.assert_close(y, whole)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_row_blocks_half_precision(monkeypatch, dtype):
    x = make_logits("peaked", 5, 3000, seed=4).to(dtype)
    cfg = DecodeConfig(min_p=0.05, top_p=0.9)
    whole = process(x, cfg)
    monkeypatch.setattr(cpu_blocks, "CPU_BLOCK_ELEMENTS", 3000)
    blocks = process(x, cfg)
    assert blocks.dtype == dtype and torch.equal(blocks, whole)


@pytest.mark.parametrize("p", [0.4, 0.9, 0.99, 0.999])
def test_top_p_fallback_on_flat_rows_matches_textbook(p):
    """Flat rows: the nucleus holds thousands of tokens, far beyond the candidate set."""
    x64 = _flat(6, 20000, seed=int(p * 1000))
    x = x64.float()
    cfg = {"top_p": p}
    out = process(x, DecodeConfig.from_dict(cfg))
    kept = torch.isfinite(out).sum(-1)
    assert (kept > top_p_mod.CANDIDATES).any()  # the fallback really ran
    check_against_reference(x.double(), out, cfg)


def test_cuda_style_top_p_equals_cpu_path(monkeypatch):
    """The CUDA program (search and bisection computed for every row, rows selected with where:
    no host read) gives the same kept sets as the CPU one (both skipped when no row needs them)."""
    x = torch.cat([_flat(4, 12000, 1), make_logits("peaked", 4, 12000, 2)]).float()
    cfgs = [DecodeConfig.from_dict({"top_p": p}) for p in (0.2, 0.6, 0.9, 0.97, 0.5, 0.9, 0.99, 1.0)]
    state = BatchState.from_configs(cfgs)
    cpu = process_core(x, state)
    calls = []

    def always(flag, fn, operands, otherwise):
        calls.append(1)
        return fn(*operands)

    monkeypatch.setattr(top_p_mod, "_run_if", always)
    monkeypatch.setattr(native_top_p, "applies", lambda x: False)  # a device never takes the CPU kernel
    sync_free = process_core(x, state)
    assert len(calls) == 2  # the search and the bisection both ran, for every row
    diff = int((torch.isfinite(cpu) != torch.isfinite(sync_free)).sum())
    assert diff == 0, diff
    for i, c in enumerate(cfgs):
        check_against_reference(x[i : i + 1].double(), sync_free[i : i + 1], c.to_dict())


def test_ties_at_the_threshold_all_stay():
    x = torch.zeros(2, 5000)
    x[:, :10] = 3.0  # ten tied top tokens, then a flat tail
    out = process(x, DecodeConfig(top_p=0.001))
    assert (torch.isfinite(out).sum(-1) == 10).all()
    out = process(x, DecodeConfig(top_p=0.9))
    assert (torch.isfinite(out).sum(-1) == 5000).all()  # ties in the tail: all or none
