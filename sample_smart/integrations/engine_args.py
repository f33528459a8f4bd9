"""Engine arguments of every command that starts a vLLM engine, and of the lm-eval model.

One table, :data:`ENGINE_FLAGS`, declares the named flags (``--tensor-parallel-size``,
``--pipeline-parallel-size``, ``--data-parallel-size``, ``--gpu-memory-utilization``,
``--max-num-seqs``, ``--dtype``, ``--quantization``, ``--distributed-executor-backend``): the
``vllm.engine.arg_utils.EngineArgs`` field, its type, its allowed range or choices and its help.
The click options (``sample_smart.commands.engine_flags.engine_options``) and the lm-eval
model's ``model_args`` are derived from it. Any other ``EngineArgs`` field travels as a generic
``KEY=VALUE`` (``--engine-arg``; the value is parsed as JSON where it parses, else kept as a
string) and is checked against vLLM's own ``dataclasses.fields(EngineArgs)``.

:func:`engine_overrides` turns both into the ``overrides`` dict of
:func:`sample_smart.integrations.vllm_engine.make_llm`, raising ``ValueError`` naming the flag
(or key) and the allowed range **before** any engine starts. Keys that our commands set
themselves (:data:`RESERVED`) are refused with the reason. Nothing given: an empty dict, so
``make_llm``'s CPU defaults stay.

vLLM is imported only when a generic key (or ``quantization``) has to be checked against it,
never at import time of this module.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENGINE_FLAGS",
    "RESERVED",
    "EngineFlag",
    "check_flag",
    "engine_field_names",
    "engine_overrides",
    "parse_engine_arg",
    "split_engine_kwargs",
]


@dataclass(frozen=True)
class EngineFlag:
    """One named engine flag: ``--<key with dashes>`` sets ``EngineArgs.<key>``.

    ``kind`` is ``"int"``, ``"float"`` or ``"choice"`` (``"str"``: any string, checked against
    vLLM's list when ``vllm_choices`` names one); ``minimum``/``maximum`` bound numbers
    (``min_open``: the minimum itself is excluded)."""

    key: str
    kind: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    choices: tuple[str, ...] = ()
    vllm_choices: str | None = None  # "module:attribute" of vLLM's list of allowed strings

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "str":
            return "a quantization method vLLM knows" if self.vllm_choices else "a string"
        what = "an integer" if self.kind == "int" else "a number"
        lo = "" if self.minimum is None else (f" > {self.minimum}" if self.min_open else f" >= {self.minimum}")
        hi = "" if self.maximum is None else f" <= {self.maximum}"
        return what + (lo + (" and" if lo and hi else "") + hi)


# The one table of named engine flags (vLLM 0.32 EngineArgs fields).
ENGINE_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag("tensor_parallel_size", "int", "GPUs per model replica that split every layer (tensor parallelism).", 1),
    EngineFlag("pipeline_parallel_size", "int", "Pipeline stages (the layers split into consecutive groups).", 1),
    EngineFlag("data_parallel_size", "int", "Independent model replicas serving one request stream.", 1),
    EngineFlag(
        "gpu_memory_utilization",
        "float",
        "Share of each GPU's memory vLLM may use (weights + KV cache); no effect on CPU.",
        0.0,
        1.0,
        min_open=True,
    ),
    EngineFlag("max_num_seqs", "int", "Most sequences the engine runs in one step.", 1),
    EngineFlag(
        "dtype",
        "choice",
        "Weights and activations dtype [make_llm's default on CPU: float32; vLLM's elsewhere: auto].",
        choices=("auto", "half", "float16", "bfloat16", "float", "float32"),
    ),
    EngineFlag(
        "quantization",
        "str",
        "Quantization method of the weights (e.g. awq, gptq, fp8; the model's own by default).",
        vllm_choices="vllm.model_executor.layers.quantization:QUANTIZATION_METHODS",
    ),
    EngineFlag(
        "distributed_executor_backend",
        "choice",
        "How ranks are started: mp (processes on this node), ray (a Ray cluster, multi-node), uni (one "
        "process), external_launcher (torchrun).",
        choices=("ray", "mp", "uni", "external_launcher"),
    ),
)
FLAGS_BY_KEY: dict[str, EngineFlag] = {f.key: f for f in ENGINE_FLAGS}

# EngineArgs fields our commands set themselves: refused as engine arguments, with the reason.
RESERVED: dict[str, str] = {
    "model": "the model is --model (lm-eval model_args: pretrained)",
    "logits_processors": "make_llm registers sample_smart's processor; another list would drop or duplicate it",
    "logprobs_mode": "traces read raw logprobs; `trace generate` has --logprobs-mode",
    "max_logprobs": "the commands size it from their --top-k / --trace-top-k",
    "skip_tokenizer_init": "the commands need the tokenizer (prompts, stop strings, traces)",
}


def check_flag(key: str, value: Any) -> Any:
    """``value`` of the named flag ``key`` (an int where the flag is an integer); ValueError
    naming the flag and the allowed range otherwise. ``None`` passes (flag not given)."""
    spec = FLAGS_BY_KEY[key]
    if value is None:
        return None
    bad = ValueError(f"{spec.flag} ({key})={value!r} is invalid: allowed {spec.allowed}")
    if spec.kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if spec.kind == "int":
            if value != int(value):
                raise bad
            value = int(value)
        if not math.isfinite(value):
            raise bad
        lo, hi = spec.minimum, spec.maximum
        if lo is not None and (value <= lo if spec.min_open else value < lo):
            raise bad
        if hi is not None and value > hi:
            raise bad
        return value
    if not isinstance(value, str):
        raise bad
    if spec.kind == "choice" and value not in spec.choices:
        raise bad
    if spec.vllm_choices:
        choices = _vllm_list(spec.vllm_choices)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"{spec.flag} ({key})={value!r} is not a quantization method of vLLM{hint}; allowed: {choices}"
            )
    return value


def _vllm_list(target: str) -> list[str]:
    import importlib

    module, attr = target.split(":")
    return list(getattr(importlib.import_module(module), attr))


@functools.lru_cache(maxsize=1)
def _engine_fields() -> dict[str, Any]:
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    # vLLM's field types are objects (a string annotation is left to vLLM to check)
    return {f.name: f.type for f in dataclasses.fields(EngineArgs)}


def engine_field_names() -> list[str]:
    """The names of ``vllm.engine.arg_utils.EngineArgs``'s fields (imports vLLM)."""
    return sorted(_engine_fields())


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the type hint ``hint``; None when the hint is not one we check
    (vLLM validates those when the engine config is built)."""
    if isinstance(hint, str):
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in typing.get_args(hint)]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_engine_key(key: str, value: Any, *, source: str = "--engine-arg", own: Mapping[str, str] = {}) -> Any:
    """Check one generic ``EngineArgs`` key and value; ValueError naming the key otherwise.

    ``own``: keys the calling command sets with a flag of its own (key -> that flag)."""
    if key in FLAGS_BY_KEY:
        raise ValueError(f"{source} {key}: use {FLAGS_BY_KEY[key].flag} (it is checked against its range there)")
    if key in own:
        raise ValueError(f"{source} {key}: this command sets it with {own[key]}")
    if key in RESERVED:
        raise ValueError(f"{source} {key}: not accepted, {RESERVED[key]}")
    fields = _engine_fields()
    if key not in fields:
        close = difflib.get_close_matches(key, list(fields), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"{source} {key}: unknown engine argument, not a field of vllm.engine.arg_utils.EngineArgs{hint}"
        )
    if _matches(value, fields[key]) is False:
        raise ValueError(f"{source} {key}={value!r}: vLLM expects {_describe(fields[key])}")
    return value


def parse_engine_arg(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, value)``: the value parsed as JSON where it parses (``2``,
    ``0.5``, ``true``, ``null``, ``{"a": 1}``), else the string as given (``ray``). Dashes in KEY
    become underscores (``--engine-arg cpu-offload-gb=4`` works too)."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or not key.isidentifier():
        raise ValueError(f"--engine-arg {text!r}: expected KEY=VALUE with KEY an EngineArgs field")
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):  # Python's json reads NaN/Infinity; JSON has none
        value = raw
    return key, value


def engine_overrides(
    named: Mapping[str, Any] | None = None,
    generic: Iterable[str] | Mapping[str, Any] = (),
    *,
    own: Mapping[str, str] = {},
    source: str = "--engine-arg",
) -> dict[str, Any]:
    """The ``make_llm`` overrides of the named flags (``{key: value or None}``, keys of
    :data:`ENGINE_FLAGS`) and the generic arguments (``"KEY=VALUE"`` strings, or an already
    parsed mapping). ValueError naming the flag or key: a value out of range, an unknown key,
    a key given twice, a reserved key or one the command sets itself (``own``: key -> flag).
    Empty when nothing is given (make_llm's defaults stay)."""
    out: dict[str, Any] = {}
    for key, value in (named or {}).items():
        if key not in FLAGS_BY_KEY:
            raise ValueError(f"{key}: not a named engine flag ({', '.join(FLAGS_BY_KEY)})")
        value = check_flag(key, value)
        if value is not None:
            out[key] = value
    pairs = list(generic.items()) if isinstance(generic, Mapping) else [parse_engine_arg(t) for t in generic]
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"{source} {key}: given twice")
        seen.add(key)
        out[key] = check_engine_key(key, value, source=source, own=own)
    return out


def split_engine_kwargs(kwargs: Mapping[str, Any], keep: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(engine overrides, rest)`` of lm-eval style keyword arguments: the keys in ``keep``
    (a model's own arguments, decoder settings) stay in ``rest``; every other key must be a named
    engine flag (checked against its range) or an ``EngineArgs`` field (checked against vLLM),
    else ValueError naming it."""
    keep = set(keep)
    rest = {k: v for k, v in kwargs.items() if k in keep}
    other = {k: v for k, v in kwargs.items() if k not in keep}
    named = {k: v for k, v in other.items() if k in FLAGS_BY_KEY}
    generic = {k: v for k, v in other.items() if k not in FLAGS_BY_KEY}
    return engine_overrides(named, generic, source="model_args"), rest
