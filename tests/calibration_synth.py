"""Synthetic teacher-forced records for the calibration tests (schema sample_smart.teacher_forced/1).

Each position draws random logits over a small vocabulary at a random sharpness, and the
gold token is *sampled from that distribution*, so the model is calibrated by
construction: c(m, 1) ~ mean p_max of bin m. Ranks count ties against the token, as
the schema says.
"""

from __future__ import annotations

import numpy as np

SCHEMA = "sample_smart.teacher_forced/1"


def make_record(rng: np.random.Generator, n_tokens: int, vocab: int = 64, top_k: int = 20, rid: str = "0") -> dict:
    scale = rng.uniform(0.2, 6.0, size=(n_tokens, 1))
    logits = rng.standard_normal((n_tokens, vocab)) * scale
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    probs = np.exp(logp)
    gold = np.array([rng.choice(vocab, p=row / row.sum()) for row in probs])
    gold_lp = logp[np.arange(n_tokens), gold]
    rank = (logp >= gold_lp[:, None]).sum(1)
    order = np.argsort(-logp, axis=1, kind="stable")[:, :top_k]
    top_lp = np.take_along_axis(logp, order, 1)
    return {
        "schema": SCHEMA,
        "id": rid,
        "model": "synthetic",
        "backend": "transformers",
        "top_k": top_k,
        "entropy_scope": "full",
        "log_base": "e",
        "n_tokens": n_tokens,
        "gold_id": gold.tolist(),
        "gold_rank": rank.tolist(),
        "gold_logprob": gold_lp.tolist(),
        "p_max": probs.max(1).tolist(),
        "entropy": (-(probs * logp).sum(1)).tolist(),
        "top_ids": order.tolist(),
        "top_logprobs": top_lp.tolist(),
    }


def make_records(seed: int = 0, n_records: int = 20, n_tokens: int = 100, **kw) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [make_record(rng, n_tokens, rid=str(i), **kw) for i in range(n_records)]


def write_traces(path, records) -> None:
    import orjson

    with open(path, "wb") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
