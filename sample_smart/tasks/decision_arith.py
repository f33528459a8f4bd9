"""accept_reject_arith: a binary decision task the project generates itself.

"Is 7 + 5 = 12?" answered ``\\boxed{Accept}`` (the equation is true) or ``\\boxed{Reject}``
(false). Single-digit operands, + or -; a false claim is off by 1 to 3 from the true result;
half the problems are true (alternating, then shuffled by the seed). Used to watch the
decision-token probabilities while a model fine-tunes (:mod:`sample_smart.analysis.decision`).

Records: ``{"id", "prompt", "target", "gt"}``: ``prompt`` the user message (it states the
answer format), ``target`` the assistant's reply ``"\\boxed{Accept}"``/``"\\boxed{Reject}"``,
``gt`` the class ("accept"/"reject"). Deterministic: ``random.Random(seed)`` with an int seed
gives the same problems on every machine and Python version; the default seeds of the train
and test splits differ.
"""

from __future__ import annotations

import random
from typing import Any

LABELS = {"accept": ["Accept"], "reject": ["Reject"]}
ANSWER_PREFIX = "\\boxed{"
SPLIT_SEEDS = {"train": 14_001, "test": 14_002}
_INSTRUCTION = "Answer with \\boxed{Accept} if it is true or \\boxed{Reject} if it is false."


def generate(n: int, seed: int | str = "train") -> list[dict[str, Any]]:
    """``n`` problems from ``seed`` (an int, or the split name "train"/"test")."""
    if isinstance(seed, str):
        if seed not in SPLIT_SEEDS:
            raise ValueError(f"seed={seed!r} is invalid: allowed an int or one of {sorted(SPLIT_SEEDS)}")
        prefix, seed = seed, SPLIT_SEEDS[seed]
    else:
        prefix = f"s{int(seed)}"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: allowed an integer >= 1")
    rng = random.Random(seed)
    truth = [i % 2 == 0 for i in range(n)]
    rng.shuffle(truth)
    out = []
    for i, true in enumerate(truth):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        value = a + b if op == "+" else a - b
        shown = value if true else value + rng.choice([-3, -2, -1, 1, 2, 3])
        if shown < 0:
            shown = value + rng.randint(1, 3)
        gt = "accept" if true else "reject"
        out.append(
            {
                "id": f"{prefix}-{i}",
                "prompt": f"Is {a} {op} {b} = {shown}? {_INSTRUCTION}",
                "target": f"{ANSWER_PREFIX}{LABELS[gt][0]}}}",
                "gt": gt,
            }
        )
    return out


def sft_features(
    tokenizer: Any, records: list[dict[str, Any]], *, chat_template: bool = True, add_eos: bool = True
) -> list[dict[str, list[int]]]:
    """Tokenised supervised examples ``{"input_ids", "attention_mask", "labels"}``: the prompt
    (chat-templated with a generation prompt) is masked with -100, the target (plus the EOS
    token when ``add_eos``) is learned; the prompt/target boundary is exact
    (:func:`sample_smart.traces.examples.encode_example`)."""
    from sample_smart.traces.examples import Example, encode_example

    feats = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for rec in records:
        enc = encode_example(
            tokenizer, Example(str(rec["id"]), rec["prompt"], rec["target"]), chat_template=chat_template
        )
        target = list(enc.target_ids) + ([int(eos)] if add_eos and eos is not None else [])
        ids = list(enc.prompt_ids) + target
        feats.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(enc.prompt_ids) + target}
        )
    return feats
