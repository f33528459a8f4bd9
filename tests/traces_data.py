"""Small (prompt, target) data written for the trace tests (project-authored text)."""

from __future__ import annotations

import orjson
import torch

PAIRS = [
    ("What is 2 + 3?", "2 + 3 = 5. The answer is 5."),
    ("Name a primary colour.", "Blue is a primary colour."),
    ("Hello wor", "ld"),  # "Hello world" is one merge across the boundary
    ("Count to five:", " 1, 2, 3, 4, 5"),
    ("Tom has 4 apples and eats 1. How many are left?", "4 - 1 = 3. The answer is 3."),
    ("Translate 'chat' from French to English.", "The word 'chat' means 'cat'."),
]


def write_pairs(path, pairs=PAIRS, ids=None) -> list[str]:
    ids = ids or [f"ex{i}" for i in range(len(pairs))]
    with open(path, "wb") as f:
        for ex_id, (p, t) in zip(ids, pairs):
            f.write(orjson.dumps({"id": ex_id, "prompt": p, "target": t}) + b"\n")
    return ids


def plain_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log_softmax of one unpadded, unbatched forward pass: row i predicts ids[i + 1]."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def assert_ranks_agree(ranks, gold_ids, logprob_rows: torch.Tensor, tol: float, max_tie_fraction: float = 0.02):
    """``ranks`` equal the ranks of ``gold_ids`` in ``logprob_rows`` (count of >=), except at
    near-ties: a difference d is accepted when at least d tokens lie within ``tol`` of the
    gold logprob, and such positions stay rare."""
    assert len(ranks) == len(gold_ids) == logprob_rows.shape[0]
    gold = torch.tensor(gold_ids)
    gold_lp = logprob_rows.gather(1, gold[:, None])
    expected = (logprob_rows >= gold_lp).sum(-1)
    close = ((logprob_rows - gold_lp).abs() <= tol).sum(-1)
    ties = 0
    for i, (got, want) in enumerate(zip(ranks, expected.tolist())):
        if got != want:
            ties += 1
            assert abs(got - want) <= close[i].item() - 1, (
                f"position {i}: rank {got} vs {want}, only {close[i].item()} tokens within {tol} of the gold logprob"
            )
    assert ties <= max(1, max_tie_fraction * len(ranks)), f"{ties} near-tie rank differences in {len(ranks)} positions"
    return ties
