"""Teacher forcing with transformers: exact full-vocabulary statistics.

One forward pass per micro-batch of (prompt + target) sequences, right-padded (pads
come after every real token, so causal attention never lets a real position see a
pad and positions need no shifting). The logits at position ``P + i - 1`` predict
target token ``i`` (P = prompt length); only the span of positions that predict some
target token in the batch goes through the LM head (``logits_to_keep`` as an index
tensor, when the model supports it). Statistics: see ``stats.token_stats``
(entropy over the full vocabulary, so ``entropy_scope = "full"``).

No training: the model is put in ``eval()`` mode and the forward runs under
``torch.inference_mode()``; no optimizer exists. Works on any device (``device=``).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from .examples import EncodedExample
from .stats import token_stats
from .teacher_forcing import teacher_forced_record


class TransformersTeacherForcer:
    name = "transformers"
    entropy_scope = "full"

    def __init__(
        self,
        model: str | os.PathLike | Any = None,
        tokenizer: Any = None,
        *,
        top_k: int = 20,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        model_name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        torch_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"dtype must name a torch dtype (float32, bfloat16, float16), got {dtype!r}")
        if model is None:
            from sample_smart.models import require_default_model

            model = require_default_model()
        if isinstance(model, (str, os.PathLike)):
            path = str(model)
            self.model_name = model_name or path
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(path)
        else:
            self.model_name = model_name or getattr(model.config, "_name_or_path", type(model).__name__)
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if top_k > vocab:
            raise ValueError(f"top_k must be <= the vocabulary size {vocab}, got {top_k}")
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else int(pad)

    def _micro_batches(self, batch: list[EncodedExample]):
        order = sorted(range(len(batch)), key=lambda i: len(batch[i].input_ids))
        cur: list[int] = []
        for i in order:
            longest = max([len(batch[j].input_ids) for j in cur] + [len(batch[i].input_ids)])
            if cur and (len(cur) >= self.batch_size or longest * (len(cur) + 1) > self.max_batch_tokens):
                yield cur
                cur = []
            cur.append(i)
        if cur:
            yield cur

    def score(self, batch: list[EncodedExample]) -> list[dict]:
        """Records for ``batch``, in the same order."""
        import torch

        out: list[dict | None] = [None] * len(batch)
        for i, rows in self.target_logits(batch):
            e = batch[i]
            gold = torch.tensor(e.target_ids, device=rows.device)
            stats = token_stats(rows, gold, self.top_k)
            out[i] = teacher_forced_record(
                e.id,
                model=self.model_name,
                backend=self.name,
                top_k=self.top_k,
                entropy_scope=self.entropy_scope,
                stats=stats,
            )
        return out  # type: ignore[return-value]

    def target_logits(self, batch: list[EncodedExample]):
        """Yield ``(index in batch, logits [T, V])``: row i predicts target token i (raw logits
        of the model's dtype, one micro-batch at a time, in micro-batch order)."""
        import torch

        with torch.inference_mode():
            for idx in self._micro_batches(batch):
                items = [batch[i] for i in idx]
                lengths = [len(e.input_ids) for e in items]
                width = max(lengths)
                ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(items), width), dtype=torch.long)
                for r, e in enumerate(items):
                    ids[r, : lengths[r]] = torch.tensor(e.input_ids)
                    mask[r, : lengths[r]] = 1
                # positions predicting target tokens: P-1 .. P+T-2 for each row
                lo = min(len(e.prompt_ids) for e in items) - 1
                hi = max(lengths) - 1
                kwargs = {}
                if self._keep_arg:
                    kwargs["logits_to_keep"] = torch.arange(lo, hi, device=self.device)
                    offset = lo
                else:
                    offset = 0
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False, **kwargs
                ).logits
                for r, (i, e) in enumerate(zip(idx, items)):
                    p, t = len(e.prompt_ids), len(e.target_ids)
                    yield i, logits[r, p - 1 - offset : p - 1 - offset + t]
