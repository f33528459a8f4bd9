"""Decision-token probabilities: the probability of each class's label token at the answer position.

A *decision* is a classifier's answer written as a word ("Accept"/"Reject", "Yes"/"No", "A".."D").
Given a label set ``{class: [words]}`` and a causal LM, this module finds

* the **label tokens** of every class (:func:`resolve_label_tokens`): each word is tokenised
  as it is and with a leading space (" Accept" and "Accept" are different BPE tokens), through
  the tokenizer itself. Convention for a word of several tokens (SmolLM2 splits "Reject" into
  "Re" + "ject"): **first-token probability**: the class is represented by the first token of
  each of its variants, and p_class is the probability of emitting one of those first tokens.
  This needs one forward pass for all classes; it is an upper bound on the probability of the
  whole word (P(word) = P(t_1) P(t_2 | t_1) ...), and it is unambiguous because two classes
  may not share a first token (an error otherwise);
* the **answer position** of a training/eval sequence (:func:`find_answer_positions`): the
  position whose logits predict the first token of the gold label word. Labels follow the
  transformers causal-LM convention (unshifted, -100 = ignored), so a label token at index j is
  predicted by the logits at j - 1. The search runs backwards over the non-ignored labels and
  takes the last label token, optionally only one right after ``answer_prefix`` (e.g.
  ``"\\boxed{"``: the answer inside the box); the gold class is that token's class;
* the **per-class probabilities** there (:func:`class_probs`), from the raw softmax over the
  full vocabulary (no temperature, no renormalisation):

      p_c  = sum over the distinct first-token ids t of class c of softmax(logits)[t]
      mass = sum_c p_c            (the share of the distribution on label tokens; -> 1 when trained)
      confidence = max_c p_c      (raw, <= mass)     pred = argmax_c p_c
      confidence_renorm = max_c p_c / mass           (the classifier's own probability)

  and the summary (:func:`summarize`): means of the above, accuracy of ``pred`` vs gold, and the
  expected calibration error of ``confidence`` (and of ``confidence_renorm``) against
  ``pred == gold`` over :data:`ECE_BINS` = 10 equal-width bins, bin = min(floor(10 c), 9)
  (:func:`sample_smart.calibration.buckets.ece`, formula in its module doc).

Renormalising over the label tokens alone would hide the mass outside them, so the raw
p_c and the mass are always reported. Pure torch/numpy: transformers is only used through
the tokenizer object passed in. Context: arXiv 2510.05987 measures correctness against the
model's raw token probabilities; this makes the same readout a training-time instrument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = -100
ECE_BINS = 10
ECE_BIN_RULE = "10 equal-width bins, bin = min(floor(10 c), 9)"
DECISION_SCHEMA = "sample_smart.decision/1"
_CLASS_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# ---------------------------------------------------------------- label tokens
@dataclass(frozen=True)
class LabelTokens:
    """Resolved label tokens: ``class_ids[c]`` = the distinct first-token ids of class ``c``.

    ``variants[c]`` lists ``(text, token_ids)`` for every variant tokenised; ``multi_token``
    names the variants of more than one token (they are scored by their first token)."""

    classes: tuple[str, ...]
    class_ids: tuple[tuple[int, ...], ...]
    variants: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...]
    multi_token: tuple[str, ...] = field(default=())

    @property
    def token_to_class(self) -> dict[int, int]:
        return {t: c for c, ids in enumerate(self.class_ids) for t in ids}

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (stored next to the numbers it produced)."""
        return {
            "convention": "first-token probability; p_class = sum of the raw softmax over the class's "
            "distinct first-token ids at the answer position",
            "classes": {
                c: {"token_ids": list(ids), "variants": {t: list(v) for t, v in var}}
                for c, ids, var in zip(self.classes, self.class_ids, self.variants)
            },
            "multi_token_variants": list(self.multi_token),
        }


def parse_label_specs(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["accept=Accept,accept", "reject=Reject,reject"]`` -> ``{"accept": [...], ...}``."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, words = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"label spec {spec!r}: expected CLASS=WORD[,WORD...], e.g. accept=Accept,accept")
        if name in out:
            raise ValueError(f"label spec {spec!r}: class {name!r} given twice")
        out[name] = [w for w in words.split(",")]
    return out


def _encode(tokenizer: Any, text: str, where: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"])
    except Exception as exc:  # the tokenizer refuses the text (e.g. a lone surrogate)
        raise ValueError(f"{where}: the tokenizer cannot encode {text!r} ({type(exc).__name__}: {exc})") from None
    if not ids:
        raise ValueError(f"{where}: {text!r} tokenises to no tokens")
    unk = getattr(tokenizer, "unk_token_id", None)
    decoded = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if (unk is not None and unk in ids and getattr(tokenizer, "unk_token", None) not in text) or decoded != text:
        raise ValueError(f"{where}: the tokenizer cannot produce {text!r} (ids {list(ids)} decode to {decoded!r})")
    return ids


def resolve_label_tokens(
    tokenizer: Any, labels: Mapping[str, Sequence[str]], *, leading_space: bool = True
) -> LabelTokens:
    """Find every class's first-token ids (module doc). ``leading_space``: also tokenise " " + word.

    Errors (ValueError naming the class and word): an empty label set, fewer than two classes,
    a class name that is not ``[A-Za-z0-9_]+`` (it becomes a metric key), a class with no
    words, an empty word, a word the tokenizer cannot produce, two classes sharing a token."""
    if not labels:
        raise ValueError("the label set is empty: give at least two classes, e.g. accept=Accept and reject=Reject")
    if len(labels) < 2:
        raise ValueError(f"the label set has one class ({list(labels)[0]!r}); a decision needs at least two")
    owner: dict[int, tuple[str, str]] = {}
    classes, class_ids, variants, multi = [], [], [], []
    for name, words in labels.items():
        if not isinstance(name, str) or not _CLASS_NAME.match(name):
            raise ValueError(f"label class {name!r}: a class name must match [A-Za-z0-9_]+ (it names the metric keys)")
        if isinstance(words, str):
            words = [words]
        if not words:
            raise ValueError(f"label class {name!r} has no words")
        ids_c: list[int] = []
        var_c: list[tuple[str, tuple[int, ...]]] = []
        for word in words:
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"label class {name!r}: word {word!r} is empty")
            word = word.strip()
            texts = [word, " " + word] if leading_space else [word]
            for text in texts:
                if any(text == t for t, _ in var_c):
                    continue
                ids = _encode(tokenizer, text, f"label class {name!r}, word {word!r}")
                var_c.append((text, ids))
                if len(ids) > 1:
                    multi.append(text)
                first = ids[0]
                prev = owner.get(first)
                if prev is not None and prev[0] != name:
                    raise ValueError(
                        f"label classes {prev[0]!r} (word {prev[1]!r}) and {name!r} (word {text!r}) share the "
                        f"token {first} ({tokenizer.convert_ids_to_tokens(first)!r}); the first-token "
                        "probabilities could not tell them apart"
                    )
                owner[first] = (name, text)
                if first not in ids_c:
                    ids_c.append(first)
        classes.append(name)
        class_ids.append(tuple(ids_c))
        variants.append(tuple(var_c))
    return LabelTokens(tuple(classes), tuple(class_ids), tuple(variants), tuple(multi))


# ---------------------------------------------------------------- answer position
def find_answer_positions(
    labels: Any, label_tokens: LabelTokens, *, tokenizer: Any = None, answer_prefix: str | None = None
) -> tuple[list[int], list[int]]:
    """Per row of ``labels`` ([B, T] ints, -100 ignored): (answer position, gold class index),
    both -1 when no label token is found. The position is j - 1 for the last non-ignored label
    j holding a label token (right after ``answer_prefix`` when given: the decoded labels
    before j must end with it; needs ``tokenizer``). Left or right padding does not matter:
    positions are absolute indices into the row, and j = 0 (nothing predicts it) is skipped."""
    import torch

    labels = torch.as_tensor(labels)
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, seq], got shape {tuple(labels.shape)}")
    if answer_prefix is not None and tokenizer is None:
        raise ValueError("answer_prefix needs the tokenizer (to decode the labels before a candidate)")
    t2c = label_tokens.token_to_class
    ids = torch.tensor(sorted(t2c), dtype=labels.dtype, device=labels.device)
    cand = torch.isin(labels, ids) & (labels != IGNORE_INDEX)
    cand[:, 0] = False
    rows = labels.tolist()
    positions, gold = [], []
    for r, mask in enumerate(cand.tolist()):
        pos = cls = -1
        for j in range(len(mask) - 1, 0, -1):
            if not mask[j]:
                continue
            if answer_prefix is not None:
                before = [t for t in rows[r][max(0, j - 32) : j] if t != IGNORE_INDEX]
                text = tokenizer.decode(before, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                if not text.endswith(answer_prefix):
                    continue
            pos, cls = j - 1, t2c[rows[r][j]]
            break
        positions.append(pos)
        gold.append(cls)
    return positions, gold


# ---------------------------------------------------------------- probabilities
def class_probs(logits: Any, label_tokens: LabelTokens) -> np.ndarray:
    """[N, C] float64 raw probabilities p_c (module doc) from [N, vocab] logits at answer positions."""
    import torch

    logits = torch.as_tensor(logits)
    logp = torch.log_softmax(logits.float(), dim=-1)
    cols = []
    for ids in label_tokens.class_ids:
        cols.append(torch.logsumexp(logp[:, list(ids)], dim=-1))
    return torch.stack(cols, dim=-1).exp().double().cpu().numpy()


def record_fields(p: np.ndarray, gold: int | None, classes: Sequence[str]) -> dict[str, Any]:
    """One example's JSON fields: p_<class>, mass, confidence, confidence_renorm, gt, pred, correct."""
    mass = float(p.sum())
    k = int(np.argmax(p))
    rec: dict[str, Any] = {f"p_{c}": float(v) for c, v in zip(classes, p)}
    rec.update(
        {
            "mass": mass,
            "confidence": float(p[k]),
            "confidence_renorm": float(p[k] / mass) if mass > 0 else float("nan"),
            "gt": None if gold is None or gold < 0 else classes[gold],
            "pred": classes[k],
        }
    )
    rec["correct"] = None if rec["gt"] is None else rec["gt"] == rec["pred"]
    return rec


def summarize(records: Sequence[Mapping[str, Any]], classes: Sequence[str], n_missing: int = 0) -> dict[str, float]:
    """Means over the found examples (module doc), with ``n`` found and ``n_missing`` (no answer
    position). Keys: p_<class>, prob_mass, confidence, confidence_renorm, accuracy, ece,
    ece_renorm (ECE over :data:`ECE_BINS` bins; accuracy and ECE over the examples with a gold
    class), n, n_missing. Empty input gives NaN means."""
    from sample_smart.calibration.buckets import ece

    out: dict[str, float] = {}
    nan = float("nan")

    def mean(key: str, rows: Sequence[Mapping[str, Any]]) -> float:
        vals = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
        return float(np.mean(vals)) if vals else nan

    for c in classes:
        out[f"p_{c}"] = mean(f"p_{c}", records)
    out["prob_mass"] = mean("mass", records)
    out["confidence"] = mean("confidence", records)
    out["confidence_renorm"] = mean("confidence_renorm", records)
    graded = [r for r in records if r.get("correct") is not None]
    correct = np.array([bool(r["correct"]) for r in graded], dtype=np.float64)
    out["accuracy"] = float(correct.mean()) if graded else nan
    out["ece"] = ece([r["confidence"] for r in graded], correct, n_bins=ECE_BINS) if graded else nan
    renorm = [r for r in graded if r.get("confidence_renorm") is not None and math.isfinite(r["confidence_renorm"])]
    out["ece_renorm"] = (
        ece([r["confidence_renorm"] for r in renorm], [bool(r["correct"]) for r in renorm], n_bins=ECE_BINS)
        if renorm
        else nan
    )
    out["n"] = float(len(records))
    out["n_missing"] = float(n_missing)
    return out


# ---------------------------------------------------------------- forward pass
def _supports_logits_to_keep(model: Any) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def probs_at(
    model: Any, input_ids: Any, positions: Sequence[int], label_tokens: LabelTokens, **kwargs: Any
) -> np.ndarray:
    """[B, C] raw class probabilities at ``positions[r]`` of row r (one no-grad forward pass;
    rows with position < 0 are NaN). ``kwargs`` (attention_mask, position_ids) go to the model.
    Only the needed positions go through the LM head (``logits_to_keep`` as an index tensor)
    when the model supports it."""
    import torch

    probs = np.full((len(positions), len(label_tokens.classes)), np.nan)
    found = [r for r, p in enumerate(positions) if p >= 0]
    if not found:
        return probs
    device = input_ids.device
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    rows_t = torch.tensor(found, device=device)
    with torch.no_grad():
        if _supports_logits_to_keep(model):
            keep = sorted({positions[r] for r in found})
            col = {p: i for i, p in enumerate(keep)}
            out = model(
                input_ids=input_ids, use_cache=False, logits_to_keep=torch.tensor(keep, device=device), **kwargs
            )
            cols_t = torch.tensor([col[positions[r]] for r in found], device=device)
        else:
            out = model(input_ids=input_ids, use_cache=False, **kwargs)
            cols_t = torch.tensor([positions[r] for r in found], device=device)
        probs[found] = class_probs(out.logits[rows_t, cols_t], label_tokens)
    return probs


def score_batch(
    model: Any,
    batch: Mapping[str, Any],
    label_tokens: LabelTokens,
    *,
    tokenizer: Any = None,
    answer_prefix: str | None = None,
) -> tuple[list[int], list[int], np.ndarray]:
    """A collated batch (``input_ids``, ``labels``, optional ``attention_mask``/``position_ids``):
    (answer positions, gold class indices, [B, C] probabilities; -1/-1/NaN where no answer
    position is found), by :func:`find_answer_positions` and :func:`probs_at`."""
    if "labels" not in batch or "input_ids" not in batch:
        raise ValueError(f"a batch needs 'input_ids' and 'labels' (got keys {sorted(batch)})")
    positions, gold = find_answer_positions(
        batch["labels"].cpu(), label_tokens, tokenizer=tokenizer, answer_prefix=answer_prefix
    )
    probs = probs_at(
        model,
        batch["input_ids"],
        positions,
        label_tokens,
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
    )
    return positions, gold, probs
