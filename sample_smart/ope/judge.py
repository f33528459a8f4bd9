"""The judge: the embedded model asked whether an answer is correct, read as decision tokens.

Prompt (natural text, the task's question as the task shows it)::

    {question} {response}

    Is this answer correct? Answer Yes or No.
    Answer:

The next-token distribution there is read with :mod:`sample_smart.analysis.decision` (label
tokens "Yes"/"No" with their leading-space variants, first-token convention, raw softmax over the
full vocabulary): p_yes, p_no, ``mass = p_yes + p_no`` (the share of the distribution on the two
answers: the **reliability weight** of the uncertainty variant) and

    judge_score = p_yes / mass        (0.5 when mass = 0)
"""

from __future__ import annotations

from typing import Any

JUDGE_LABELS = {"yes": ["Yes"], "no": ["No"]}
JUDGE_TEMPLATE = "{question} {response}\n\nIs this answer correct? Answer Yes or No.\nAnswer:"


class Judge:
    """Scores (question, response) pairs with ``model``/``tokenizer`` (one sequence per forward pass)."""

    def __init__(self, model: Any, tokenizer: Any):
        from sample_smart.analysis.decision import resolve_label_tokens

        self.model = model
        self.tokenizer = tokenizer
        self.label_tokens = resolve_label_tokens(tokenizer, JUDGE_LABELS)

    def score(self, question: str, response: str) -> dict[str, float]:
        """The judge fields of one answer (module doc)."""
        return self.score_many([(question, response)])[0]

    def score_many(self, pairs: list[tuple[str, str]]) -> list[dict[str, float]]:
        """:meth:`score` of several answers in one right-padded forward pass (a pad comes after every
        real token, so causal attention never lets the answer position see one)."""
        import torch

        from sample_smart.analysis.decision import probs_at

        if not pairs:
            return []
        seqs = [
            self.tokenizer(JUDGE_TEMPLATE.format(question=q.rstrip(), response=r.strip()))["input_ids"]
            for q, r in pairs
        ]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.full((len(seqs), width), int(pad or 0), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        from sample_smart.ope.teacher_force import fixed_threads

        with fixed_threads():
            probs = probs_at(self.model, ids, [len(s) - 1 for s in seqs], self.label_tokens, attention_mask=mask)
        out = []
        for p_yes, p_no in probs.tolist():
            mass = p_yes + p_no
            out.append(
                {
                    "judge_score": p_yes / mass if mass > 0 else 0.5,
                    "judge_p_yes": p_yes,
                    "judge_p_no": p_no,
                    "judge_mass": min(mass, 1.0),
                }
            )
        return out

    def describe(self) -> dict[str, Any]:
        return {"template": JUDGE_TEMPLATE, "labels": self.label_tokens.describe(), "score": "p_yes / (p_yes + p_no)"}
