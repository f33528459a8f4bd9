"""Teacher forcing with vLLM: prompt log-probabilities of ``prompt + target``.

Each example is sent as token ids (``prompt_ids + target_ids``, so the boundary is the
one of ``examples.encode_example``) with ``SamplingParams(max_tokens=1,
prompt_logprobs=top_k)``. vLLM returns, for every prompt position, the logprob and
rank of the token there plus the top-k, computed from the raw logits (prompt tokens
skip the sampling processors, whatever the engine's ``logprobs_mode``). The full
distribution is not returned, so the entropy is over the top-k only
(``entropy_scope = "top_k"``: ``-sum_{v in top-k} p_v ln p_v``, a lower bound).
"""

from __future__ import annotations

from typing import Any

from .examples import EncodedExample
from .schemas import TEACHER_FORCED_FIELDS, position_stats
from .teacher_forcing import teacher_forced_record
from .vllm_logprobs import check_top_k, engine_info, position_values


class VLLMTeacherForcer:
    name = "vllm"
    entropy_scope = "top_k"

    def __init__(self, llm: Any, *, top_k: int = 20, model_name: str | None = None):
        check_top_k(llm, top_k)
        info = engine_info(llm)
        self.llm = llm
        self.top_k = top_k
        self.model_name = model_name or info["model"]
        self.max_model_len = info["max_model_len"]
        self.tokenizer = llm.get_tokenizer()

    def score(self, batch: list[EncodedExample]) -> list[dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        for e in batch:
            if len(e.input_ids) + 1 > self.max_model_len:
                raise ValueError(
                    f"example {e.id!r}: prompt + target is {len(e.input_ids)} tokens; the engine's "
                    f"max_model_len={self.max_model_len} allows at most {self.max_model_len - 1}"
                )
        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=self.top_k, flat_logprobs=True, detokenize=False
        )
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=e.input_ids) for e in batch], params, use_tqdm=False)
        return [self._record(e, out.prompt_logprobs) for e, out in zip(batch, outs)]

    def _record(self, e: EncodedExample, plp: Any) -> dict:
        cols = position_stats(TEACHER_FORCED_FIELDS)
        p = len(e.prompt_ids)
        for i, gold in enumerate(e.target_ids):
            for stat, value in position_values(plp, p + i, gold, self.top_k, entropy=True).items():
                cols[stat].append(value)
        return teacher_forced_record(
            e.id,
            model=self.model_name,
            backend=self.name,
            top_k=self.top_k,
            entropy_scope=self.entropy_scope,
            stats=cols,
        )
