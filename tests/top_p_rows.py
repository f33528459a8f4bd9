"""Rows that make top-p's search work hard (shared by the eager and the compiled-programs tests)."""

from __future__ import annotations

import torch

from sample_smart.processors import top_p as top_p_mod


def adversarial_row(vocab: int) -> torch.Tensor:
    """A row the sample cannot see: 4000 distinct, nearly equal logits that carry the crossing,
    placed off the sample's stride, over a flat tail."""
    stride = max(1, vocab // top_p_mod.SAMPLE)
    x = torch.randn(vocab, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) - 4.0
    slots = torch.tensor([i for i in range(vocab) if i % stride][:4000])
    x[slots] = 2.0 + torch.arange(4000, dtype=torch.float64) * 1e-6
    return x
