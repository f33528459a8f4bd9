"""The test suite's shared helpers: the repository root, logits makers, the one reference checker
(processor output against the float64 textbook rules of ``reference_impls``) and the one mixed
batch of settings that tests of whole batches share."""

from __future__ import annotations

from pathlib import Path

import torch
from reference_impls import kept_set

REPO = Path(__file__).resolve().parent.parent

# A batch whose every row uses other knobs (rows must not be confusable).
MIXED = [
    {},
    {"temperature": 0.7, "top_k": 20, "top_p": 0.9},
    {"edt_var": "0.8,1.0,1.0", "dynamic_top_k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "prob_threshold": 1e-4},
    {"hewitt_epsilon": 1e-3, "min_p": 0.05, "greedy_threshold": 0.3},
    {"cal_acc": "-0.4,0.6,0.05", "top_n_sigma": 1.5},
    {"confidence_bin_only": 3, "temperature": 0},
]


def make_logits(kind: str, b: int, v: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        x = torch.randn(b, v, generator=g, dtype=torch.float64) * 2.0
    else:  # peaked: one or a few dominant tokens per row, spread of confidences over rows
        x = torch.randn(b, v, generator=g, dtype=torch.float64)
        boost = torch.linspace(0.0, 12.0, b, dtype=torch.float64)
        x[:, 0] += boost
        x[:, 1] += boost * 0.8
    return x


def check_against_reference(x64: torch.Tensor, out: torch.Tensor, cfg: dict) -> None:
    for i in range(x64.shape[0]):
        keep, near, _ = kept_set(x64[i].numpy(), cfg)
        got = torch.isfinite(out[i]).numpy()
        bad = (got != keep) & ~near
        assert not bad.any(), (
            f"row {i}: {int(bad.sum())} tokens decided differently from the textbook rule "
            f"(kept {int(got.sum())}, expected {int(keep.sum())}) for {cfg}"
        )
