"""sample_smart as a vLLM logits processor, per request, for both of vLLM's runners.

Use::

    from vllm import LLM
    from sample_smart.integrations.vllm import SampleSmartLogitsProcessor, sampling_params
    llm = LLM(model, logits_processors=[SampleSmartLogitsProcessor])  # or just LLM(model) once
    # sample_smart is installed: the ``vllm.logits_processors`` entry point loads it
    out = llm.generate(prompts, sampling_params({"min_p": 0.1, "greedy_threshold": 0.3},
                                                max_tokens=64, seed=0))

or ``python -m vllm.entrypoints.openai.api_server --model M --logits-processors
sample_smart.integrations.vllm:SampleSmartLogitsProcessor`` and per request
``"vllm_xargs": {"min_p": 0.1}`` (flat keys) or ``"vllm_xargs": {"sample_smart": "<JSON>"}``.

**Per-request settings** (``SamplingParams.extra_args``): either ``extra_args["sample_smart"]``,
a dict (or its JSON text, since the OpenAI server's ``vllm_xargs`` cannot nest) of the keys
of :meth:`sample_smart.DecodeConfig.from_dict`, or those keys (and the reference scripts'
aliases) flat in ``extra_args``, as the reference processor reads them, so its users switch
by changing one import. Not both at once. Other extra_args keys are left to other processors.
A request without settings passes through untouched.

**Admission** (``validate_params``, run by vLLM before a request joins the batch): a bad
setting raises ``ValueError`` with :class:`DecodeConfig`'s message (key, value, allowed
range); vLLM refuses that request only (HTTP 400 on the server). Nothing but ``ValueError``
leaves it, whatever a client sends (JSON text is limited to ``MAX_SETTINGS_JSON`` characters;
too deep a nest or too long a number is a ValueError too), and every admitted setting gives
finite logits (the ranges are in :mod:`sample_smart.config`). Should ``apply`` fail all the
same, the error is logged and that step's logits go on unprocessed: the engine keeps running.
Temperature is applied in one place: a request whose settings scale the logits (``temperature``
other than 0/1, or ``edt_var``) must leave vLLM's own ``temperature`` at 1.0; anything else is
refused rather than tempering twice (or, for vLLM temperature 0, silently ignoring our temperature).

**Calibrations** are served by name: the operator lists them when the server starts
(``SAMPLE_SMART_CALIBRATIONS=name=path,...`` or a folder of ``*.json``; see
:mod:`sample_smart.calibration.registry`), they are read and checked once when the processor is
built, and a request sends ``{"calibration": "name"}`` or ``{"calibration": {"name", "mode",
"threshold"}}``. A request never makes the server open a path: a path is just an unknown name.
Offline, :func:`sampling_params` reads a calibration *path* on the caller's side and sends its
knobs.

**Where it runs and what it sees.**

- v1 runner (CPU, and GPUs without the V2 runner): the processor is *argmax-invariant* (every
  rule keeps the argmax), so vLLM runs it after its own temperature, on the rows it samples.
  Greedy requests (vLLM temperature 0) take vLLM's argmax before any argmax-invariant
  processor, and an all-greedy batch skips them: for those requests our settings have no
  effect, which is exact, because every sample_smart decoder keeps the argmax and so its
  temperature-0 limit is the argmax itself. vLLM's own min_p (a built-in argmax-invariant
  processor) runs just before ours; its top_k/top_p run after.
- Model Runner V2 (GPU with Triton): custom processors run *before* vLLM's temperature,
  min_p and top-k/top-p, on every row. To keep the v1 semantics (thresholds computed on the
  distribution after vLLM's temperature T), rows with T not in {0, 1} are processed as
  ``process(logits / T) * T``; vLLM then divides by T again. Our rules therefore see the
  same distribution on both runners; only vLLM's own min_p moves (before ours on v1, after
  ours on V2). Speculative decoding: V2 gives one row per draft token; the row -> request
  mapping is then read from the device once per step (the only host sync, and only then).

**Per-row state.** The processor keeps one :class:`DecodeConfig` per batch row (v1) or per
request slot (V2) on the host and rebuilds the core's :class:`BatchState` only when the
batch changes; ``apply`` then calls ``process_core`` (no host sync, no validation: the
settings were validated at admission). v1 batch updates are processed in vLLM's documented
order: removed, added, moved (UNIDIRECTIONAL a->b, SWAP a<->b).

One class serves both runners: vLLM's V2 loader rejects entry-point plugins that are not
V2 processors, and v1 rejects non-v1 ones, so ``SampleSmartLogitsProcessor`` subclasses both
interfaces and picks its mode from the constructor's arguments (v1: ``(vllm_config, device,
is_pin_memory)``, V2: ``(vllm_config, req_states)``). A second copy of the processor in the
same engine (entry point plus ``--logits-processors``) disables itself, so settings are
never applied twice.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

from sample_smart.calibration.registry import ENV_VAR, served_calibrations
from sample_smart.config import SETTING_KEYS, DecodeConfig

try:  # Model Runner V2 (vLLM >= 0.2x); older vLLM has only the v1 interface
    from vllm.v1.worker.gpu.sample.logits_processor.interface import (
        LogitsProcessor as V2LogitsProcessor,
    )
except ImportError:  # pragma: no cover - depends on the vLLM version
    V2LogitsProcessor = None  # type: ignore[assignment,misc]

__all__ = [
    "EXTRA_ARGS_KEY",
    "SampleSmartLogitsProcessor",
    "config_from_params",
    "sampling_params",
]

logger = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "sample_smart"
_NOOP = DecodeConfig()


# ---------------------------------------------------------------------------- settings
MAX_SETTINGS_JSON = 64 * 1024  # characters of extra_args["sample_smart"] given as JSON text


def _is_setting_key(key: Any) -> bool:
    """True when ``key`` is a DecodeConfig key, ``calibration`` or one of the reference scripts' aliases."""
    return isinstance(key, str) and key in SETTING_KEYS


def _settings_dict(extra_args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The sample_smart settings carried by ``extra_args`` (None when there are none)."""
    if not extra_args:
        return None
    flat = {k: v for k, v in extra_args.items() if k != EXTRA_ARGS_KEY and _is_setting_key(k)}
    if EXTRA_ARGS_KEY not in extra_args:
        return flat or None
    nested = extra_args[EXTRA_ARGS_KEY]
    if flat:
        raise ValueError(
            f"sample_smart settings given both in extra_args[{EXTRA_ARGS_KEY!r}] and as flat "
            f"extra_args keys ({', '.join(sorted(flat))}); use one of the two"
        )
    if isinstance(nested, str):
        if len(nested) > MAX_SETTINGS_JSON:
            raise ValueError(
                f"extra_args[{EXTRA_ARGS_KEY!r}] is {len(nested)} characters of JSON text; "
                f"allowed at most {MAX_SETTINGS_JSON}"
            )
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict of settings or its JSON text; "
                f"got a string that is not JSON ({exc.msg})"
            ) from None
        except (RecursionError, ValueError):  # nested too deep; ints past Python's digit limit
            raise ValueError(
                f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict of settings or its JSON text; "
                "got JSON nested too deeply or with a number too long to read"
            ) from None
    if nested is None:
        return None
    if not isinstance(nested, Mapping):
        raise ValueError(
            f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict of settings or its JSON text, got {type(nested).__name__}"
        )
    return dict(nested)


def _check_temperature(cfg: DecodeConfig, vllm_temperature: float) -> None:
    if cfg.uses_temperature and vllm_temperature != 1.0:
        ours = f"edt_var={list(cfg.edt_var)}" if cfg.edt_var is not None else f"temperature={cfg.temperature}"
        raise ValueError(
            f"temperature would be applied twice: sample_smart {ours} replaces vLLM's temperature, "
            f"so vLLM's temperature must be 1.0 (got {vllm_temperature}); set it in one place"
        )


def _served_calibrations():
    """The server's calibrations; if they fail to load here (they loaded when the engine started),
    the client learns only that, never the operator's paths (those go to the server log)."""
    try:
        return served_calibrations()
    except ValueError:
        logger.exception("sample_smart: the calibrations of $%s failed to load", ENV_VAR)
        raise ValueError("calibrations: the server's calibrations failed to load; see the server log") from None


def config_from_params(params: SamplingParams) -> DecodeConfig:
    """The request's :class:`DecodeConfig` (no-op when it carries no settings).

    Raises ValueError naming the field and its allowed range on bad settings (and only ValueError,
    whatever the request carries). A ``calibration`` setting names one of the calibrations the
    server loaded at start-up (:func:`~sample_smart.calibration.registry.served_calibrations`);
    no path a request names is ever opened.
    """
    settings = _settings_dict(params.extra_args)
    if not settings:
        return _NOOP
    cfg = DecodeConfig.from_dict(settings, calibrations=_served_calibrations())
    _check_temperature(cfg, float(params.temperature))
    return cfg


def sampling_params(config: DecodeConfig | Mapping[str, Any] | None = None, **vllm_kwargs: Any) -> SamplingParams:
    """``vllm.SamplingParams(**vllm_kwargs)`` carrying ``config`` in ``extra_args["sample_smart"]``.

    Validated here, so a bad setting fails at the call, before any engine sees it.
    """
    # offline, on the caller's side: a "calibration" path is read here and sent as its knobs
    cfg = config if isinstance(config, DecodeConfig) else DecodeConfig.from_dict(config)
    extra = dict(vllm_kwargs.pop("extra_args", None) or {})
    if not cfg.is_noop:
        extra[EXTRA_ARGS_KEY] = cfg.to_dict()
    params = SamplingParams(**vllm_kwargs, extra_args=extra or None)
    config_from_params(params)
    return params


def _safe_config(params: SamplingParams) -> DecodeConfig:
    """config_from_params for a request already admitted: never raises into the engine loop."""
    try:
        return config_from_params(params)
    except ValueError as exc:  # only if a caller bypassed vLLM's admission check
        logger.error("sample_smart: request settings rejected after admission (%s); row left unprocessed", exc)
        return _NOOP


# ---------------------------------------------------------------------------- batch rows
def _core():
    from sample_smart.processors import BatchState, process_core

    return BatchState, process_core


class _Rows:
    """Host-side DecodeConfig per row and the core's BatchState built from them on demand."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.configs: list[DecodeConfig] = []
        self._state = None
        self._state_key: Any = None
        self.BatchState, self.process_core = _core()

    def state_for(self, key: Any, configs: Sequence[DecodeConfig], vocab_size: int):
        """BatchState for ``configs``, made again only when ``key`` changed: the previous state's
        rows gathered when no request joined (``BatchState.rearranged``), else built."""
        if key != self._state_key:
            state = self._state.rearranged(configs, vocab_size) if self._state is not None else None
            if state is None:
                state = self.BatchState.from_configs(list(configs), device=self.device, vocab_size=vocab_size)
            self._state, self._state_key = state, key
        return self._state

    def process(self, logits: torch.Tensor, state: Any) -> torch.Tensor:
        """``process_core`` in place; an unexpected error is logged and the logits go on unprocessed
        (one bad step must never kill the engine; admission makes this unreachable in practice)."""
        try:
            return self.process_core(logits, state, inplace=True)
        except Exception:  # noqa: BLE001 - the engine loop must survive whatever happens here
            logger.exception(
                "sample_smart: processing failed for a batch of %d rows; rows left as they are", logits.shape[0]
            )
            return logits


def _prepare_programs(vllm_config: Any, device: Any) -> float | None:
    """Compile the processor's programs for this engine's logits now, at engine start, so that no
    request ever waits for a compile (``sample_smart.processors.prepare``; the sampler hands the
    processor float32 logits of the model's vocabulary, in ``torch.inference_mode``, written in
    place). None: nothing compiled
    (another backend, no compiler: then the eager chain runs, with one warning)."""
    from sample_smart.processors import prepare

    try:
        vocab = int(vllm_config.model_config.get_vocab_size())
    except Exception:  # noqa: BLE001 - a config without a model (tests): nothing to prepare
        return None
    seconds = prepare(vocab, torch.float32, device, inplace=True, inference=True)  # vLLM steps in inference_mode
    if seconds is not None:
        logger.info("sample_smart: processor programs ready for vocabulary %d in %.1f s", vocab, seconds)
    return seconds


# ---------------------------------------------------------------------------- the processor
_V2_BASES: tuple[type, ...] = (V2LogitsProcessor,) if V2LogitsProcessor is not None else ()


class SampleSmartLogitsProcessor(V1LogitsProcessor, *_V2_BASES):
    """Per-request sample_smart decoding inside vLLM (v1 and Model Runner V2; see module doc)."""

    # id(vllm_config) -> the first live instance for that engine (duplicate registration guard)
    _engines: "weakref.WeakValueDictionary[int, SampleSmartLogitsProcessor]" = weakref.WeakValueDictionary()

    # -- construction ---------------------------------------------------------------------
    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        req_states = kwargs.get("req_states", args[0] if len(args) == 1 else None)
        self.runner = "v2" if req_states is not None and hasattr(req_states, "max_num_reqs") else "v1"
        if self.runner == "v1":
            device = kwargs.get("device", args[0] if args else "cpu")
        else:
            device = req_states.device
        self._vllm_config = vllm_config
        first = self._engines.get(id(vllm_config))
        self.duplicate = first is not None and first._vllm_config is vllm_config
        if self.duplicate:
            logger.warning("sample_smart: processor registered twice in one engine; the second copy is inactive")
        else:
            self._engines[id(vllm_config)] = self
        served_calibrations()  # read and check $SAMPLE_SMART_CALIBRATIONS now: a bad file stops start-up
        self._rows = _Rows(device)
        if not self.duplicate:
            self.prepare_seconds = _prepare_programs(vllm_config, device)
        self._dirty = False
        self._n_active = 0  # rows (v1) with a non-no-op config
        self._v1_key: Any = None
        if self.runner == "v2":
            n = int(req_states.max_num_reqs)
            self._rows.configs = [_NOOP] * n
            self._slot_temp = [1.0] * n  # vLLM temperature per slot (V2 runs before it)
            self._slot_version = 0

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse bad settings at admission: ValueError with DecodeConfig's message (vLLM turns only
        ValueError into a refusal of that one request, so nothing else may escape)."""
        try:
            config_from_params(sampling_params)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - defence in depth: never an engine error
            raise ValueError(f"sample_smart settings could not be read ({type(exc).__name__})") from None

    def is_argmax_invariant(self) -> bool:
        """Every sample_smart rule keeps the argmax (v1: runs after temperature, skipped for greedy rows)."""
        return True

    # -- v1 interface ---------------------------------------------------------------------
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or self.duplicate:
            return
        rows = self._rows.configs
        need = max(
            [batch_update.batch_size]
            + [i + 1 for i, *_ in batch_update.added]
            + [max(a, b) + 1 for a, b, _ in batch_update.moved]
        )
        if len(rows) < need:
            rows.extend([_NOOP] * (need - len(rows)))
        for index in batch_update.removed:
            rows[index] = _NOOP
        for index, params, _prompt, _output in batch_update.added:
            rows[index] = _safe_config(params)
        for a, b, direction in batch_update.moved:
            if direction == MoveDirectionality.SWAP:
                rows[a], rows[b] = rows[b], rows[a]
            else:  # UNIDIRECTIONAL: a's request now lives at b, a is empty
                rows[b], rows[a] = rows[a], _NOOP
        del rows[batch_update.batch_size :]
        self._n_active = sum(not c.is_noop for c in rows)
        self._dirty = True

    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if ctx is not None:
            return self._apply_v2(logits, ctx)
        if self.duplicate or not self._n_active:
            return logits
        if self._dirty:
            self._v1_key = object()
            self._dirty = False
        state = self._rows.state_for(self._v1_key, self._rows.configs, logits.shape[-1])
        # vLLM hands over its own float32 buffer (raw logprobs were copied before): write in place.
        return self._rows.process(logits, state)

    # -- Model Runner V2 interface --------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        """V2: (re)initialise slot ``req_idx``; True when the request has settings."""
        if self.duplicate:
            return False
        cfg = _safe_config(sampling_params)
        self._rows.configs[req_idx] = cfg
        temp = float(sampling_params.temperature)
        self._slot_temp[req_idx] = temp if temp > 0.0 else 1.0
        self._slot_version += 1
        return not cfg.is_noop

    def apply_staged_writes(self) -> None:
        """V2: nothing staged; the row state is built in ``apply`` when the batch changes."""

    def _apply_v2(self, logits: torch.Tensor, ctx: Any) -> torch.Tensor:
        if self.duplicate:
            return logits
        slots = ctx.idx_mapping_np
        if logits.shape[0] != len(slots):  # speculative decoding: one row per draft token
            slots = ctx.expanded_idx_mapping.tolist()
        slots = [int(s) for s in slots]
        configs = [self._rows.configs[s] for s in slots]
        if all(c.is_noop for c in configs):
            return logits
        key = (self._slot_version, tuple(slots))
        state = self._rows.state_for(key, configs, logits.shape[-1])
        temps = [self._slot_temp[s] if not c.is_noop else 1.0 for s, c in zip(slots, configs)]
        if all(t == 1.0 for t in temps):
            # V2 copies the logits into a fresh float32 buffer before the processors: in place is safe.
            return self._rows.process(logits, state)
        if getattr(self, "_temp_key", None) != key:
            self._temp = torch.tensor(temps, dtype=logits.dtype).to(logits.device, non_blocking=True)[:, None]
            self._temp_key = key
        # v1 semantics: our thresholds see vLLM's tempered distribution; vLLM divides by T next.
        out = self._rows.process(logits.div_(self._temp), state)
        return out.mul_(self._temp)
