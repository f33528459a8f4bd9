"""One request's decoder settings.

:class:`DecodeConfig` is immutable and validated on construction. It accepts the keys and
value formats of the reference scripts of "Sample Smart, Not Hard" (arXiv 2510.05987)
so that their users can switch by changing one import:

=====================  ===========================================================  =========================
key                    meaning (the kept set; everything else gets -inf)             allowed values
=====================  ===========================================================  =========================
temperature            logits / T; T = 0 means greedy                               0, or 1e-6 <= T <= 1e6
edt_var                entropy-dependent temperature T = T0 * N ** (theta / H),     "N,theta,T0": N > 0 finite,
                       H = entropy (nats) of the untempered row (Zhang et al. 2024)  |theta| <= 1e6,
                                                                                    1e-6 <= T0 <= 1e6
top_k                  the k most probable tokens (0 or -1: off)                     int -1..2**31-1
top_p                  nucleus: smallest prefix with mass >= p (1: off)              0 < p <= 1
min_p                  p >= min_p * p_max (Nguyen et al. 2024)                       0 <= min_p <= 1
prob_threshold         epsilon sampling: p >= eps (Hewitt et al. 2022)               0 <= eps <= 1
hewitt_epsilon         eta sampling: p >= min(eps, sqrt(eps) * exp(-H))             0 <= eps <= 1
dynamic_top_k          top K_m, m = p_max decile; 10 ints, **index 0 = [0.9, 1]**    10 ints 0..2**31-1; 0 = greedy
greedy_threshold       if p_max < t keep only the argmax                             0 <= t <= 1
confidence_bin_only    sample only if p_max falls in decile b, else greedy           int 1..10 (1 = lowest)
cal_acc                calibrated-epsilon: keep base**A * p**B >= thr                "A,B,thr": |A| <= 1e6,
                                                                                    0 < B <= 1e6, 0 < thr <= 1e6
cal_acc_base           the log base of the cal_acc fit (reference: 10)               10 or "e"
calibration            a calibration file (``sample-smart calibrate fit``) turned    offline: a path, or {"path",
                       into Calibrated-TopK or Calibrated-epsilon knobs              "mode", "threshold"}; served:
                                                                                    a name (see below)
top_n_sigma            keep logit >= max - n * std(finite logits) (Tang et al. 2024) 0 < n <= 1e6
top_a                  keep p >= a * p_max ** 2 (top-a, BlinkDL's RWKV sampler)      0 <= a <= 1 (0 = off)
=====================  ===========================================================  =========================

p_max deciles are ``bin = min(floor(10 * p_max), 9)`` (0-based, 0 = [0, 0.1)), as in the reference
processor; ``dynamic_top_k[9 - bin]`` is the K of a row and ``confidence_bin_only = bin + 1``.

Every error is a :class:`ValueError` whose message names the key, the value received (shortened
to at most ~80 characters: a client may send megabytes or a 5000-digit number) and the allowed
range; no other exception type escapes ``from_dict`` for any JSON-like input.

**Why the numeric ranges.** Each accepted value gives finite logits in float32, float16 and bfloat16
(kept tokens finite, the argmax always kept): temperatures in [1e-6, 1e6] keep ``logits / T`` within
float32 for any realistic logits (|x| < 1e30), and half-precision outputs of tempered rows are shifted
by the row max and floored at the dtype's lowest finite value (see ``processors.pipeline``); EDT's
``theta * ln N`` is formed in float64 and stays far inside float32; integer knobs fit the int64 (and
int32) tensors the processors build. Below 1e-6 a temperature is numerically greedy: use 0.

**Calibrations by name.** ``calibration`` may name a file (offline use: ``process``, ``LLM``
through :func:`sample_smart.integrations.vllm.sampling_params`, the CLI), read only when it is a
regular file of bounded size (see :mod:`sample_smart.calibration.derive`). A server never opens a path a
request names: :meth:`DecodeConfig.from_dict` is then called with ``calibrations=`` (the calibrations
the operator loaded at start-up, by name) and ``calibration`` must be one of those names, or
``{"name", "mode", "threshold"}``; an unknown name is refused without touching the file system.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from sample_smart.describe import describe, reprlib_repr  # noqa: F401 (re-exported: the API)

__all__ = ["DecodeConfig", "KEYS", "KNOBS", "Knob", "SETTING_KEYS", "describe"]

# Alias keys used by the reference scripts' extra_args -> our field name.
_ALIASES = {
    "selgreedy_thresh": "greedy_threshold",
    "selective_greedy": "greedy_threshold",
    "sample_only_bin": "confidence_bin_only",
    "confidence_only_bin": "confidence_bin_only",
    "epsilon": "prob_threshold",
    "eta": "hewitt_epsilon",
}

_BASES = {"10": 10.0, "e": math.e}
# keys that scale the logits, or qualify another key, rather than truncate
_TRANSFORM_KEYS = ("temperature", "edt_var", "cal_acc_base")


INT_MAX = 2**31 - 1  # largest top_k / dynamic_top_k entry (no vocabulary is larger)
TEMPERATURE_RANGE = (1e-6, 1e6)  # a positive temperature (0 = greedy is allowed too)
EDT_THETA_MAX = 1e6  # |theta| of edt_var
CAL_ACC_MAX = 1e6  # |A|, B and thr of cal_acc
N_SIGMA_MAX = 1e6  # top_n_sigma


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{key}={describe(value)} is invalid: allowed {allowed}")


def _as_float(key: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(key, value, allowed)
    if isinstance(value, str) and len(value) > 64:
        raise _bad(key, value, allowed)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        raise _bad(key, value, allowed) from None
    if not math.isfinite(out):
        raise _bad(key, value, allowed)
    return out


def _as_int(key: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool):
        raise _bad(key, value, allowed)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) <= 32:  # int() of thousands of digits raises (and is slow)
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _bad(key, value, allowed)


def _as_int_in(key: str, value: Any, lo: int, hi: int, allowed: str) -> int:
    out = _as_int(key, value, allowed)
    if not lo <= out <= hi:
        raise _bad(key, value, allowed)
    return out


def _as_list(key: str, value: Any, allowed: str) -> list[Any]:
    """Accept a list/tuple or the reference scripts' "a,b,c" string."""
    if isinstance(value, str):
        if len(value) > 1024:
            raise _bad(key, value, allowed)
        parts = [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]
        return parts
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _bad(key, value, allowed)


def _as_tuple(key: str, value: Any, length: int, convert, allowed: str) -> tuple:
    """Exactly ``length`` values (a list, tuple or "a,b,..." string), each converted."""
    items = _as_list(key, value, allowed)
    if len(items) != length:
        raise ValueError(f"{key}={describe(value)} is invalid: got {len(items)} values, allowed {allowed}")
    return tuple(convert(key, v, allowed) for v in items)


def _in_range(key: str, value: float, lo: float, hi: float, allowed: str, lo_open=False) -> float:
    if value < lo or value > hi or (lo_open and value == lo):
        raise _bad(key, value, allowed)
    return value


@dataclass(frozen=True)
class DecodeConfig:
    """One request's decoder settings (immutable). ``None`` means "knob not set"."""

    temperature: float | None = None
    edt_var: tuple[float, float, float] | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    prob_threshold: float | None = None
    hewitt_epsilon: float | None = None
    dynamic_top_k: tuple[int, ...] | None = None
    greedy_threshold: float | None = None
    confidence_bin_only: int | None = None
    cal_acc: tuple[float, float, float] | None = None
    cal_acc_base: float = 10.0
    top_n_sigma: float | None = None
    top_a: float | None = None

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        norm = _normalise_fields(self)
        for name, value in norm.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, calibrations: Any = None) -> "DecodeConfig":
        """Build from a dict of the reference scripts' extra_args keys (see module doc).

        Keys whose value is ``None`` are treated as not set. Unknown keys raise ValueError.
        ``calibrations``: the resolver of the ``calibration`` key, chosen by the caller at its edge:
        a :class:`~sample_smart.calibration.registry.CalibrationRegistry` when the settings come
        from an untrusted client (``calibration`` names one of its entries; no file is ever opened),
        None for the offline :class:`~sample_smart.calibration.registry.CalibrationFiles`
        (``calibration`` is a path).
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"decoder settings must be a mapping of key -> value, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        d = dict(d)
        calibration = d.pop("calibration", None)
        if calibration is not None:
            for key, value in _calibration_settings(calibration, calibrations).items():
                if d.get(key) is not None:
                    raise ValueError(f"decoder setting {key!r} given both directly and by 'calibration'")
                d[key] = value
        for raw_key, value in d.items():
            key = _ALIASES.get(raw_key, raw_key)
            if key not in KEYS:
                raise ValueError(
                    f"unknown decoder setting {describe(raw_key)}: allowed keys are "
                    f"{', '.join(sorted(KEYS | {'calibration'}))}"
                )
            if value is None:
                continue
            if key in kwargs:
                raise ValueError(f"decoder setting {key!r} given twice (as {describe(raw_key)} and an alias)")
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_calibration(
        cls, path: str, mode: str = "epsilon", threshold: float | None = None, **extra: Any
    ) -> "DecodeConfig":
        """A Calibrated-TopK (``mode="topk"``) or Calibrated-epsilon (``mode="epsilon"``) decoder
        from a calibration file written by ``sample-smart calibrate fit``; ``extra`` adds other knobs."""
        from sample_smart.calibration.registry import CalibrationFiles

        settings = CalibrationFiles().settings(path, mode, threshold)
        settings.update(extra)
        return cls.from_dict(settings)

    def to_dict(self) -> dict[str, Any]:
        """The set knobs only, in from_dict's format; ``from_dict(c.to_dict()) == c``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "cal_acc_base":
                if self.cal_acc is not None and value != 10.0:
                    out[f.name] = "e" if value == math.e else value
                continue
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> "DecodeConfig":
        d = asdict(self)
        d.update(changes)
        return DecodeConfig(**d)

    # ------------------------------------------------------------------ properties
    @property
    def is_noop(self) -> bool:
        """True when no knob changes the logits (the row comes back unchanged)."""
        return (
            not self.uses_temperature
            and not self.is_greedy
            and all(getattr(self, key) is None for key in KNOBS if key not in _TRANSFORM_KEYS)
        )

    @property
    def uses_temperature(self) -> bool:
        """True when the config scales the logits (a positive temperature != 1, or EDT)."""
        return self.edt_var is not None or (self.temperature is not None and self.temperature not in (0.0, 1.0))

    @property
    def is_greedy(self) -> bool:
        """temperature == 0: keep only the argmax (unless EDT, which overrides temperature)."""
        return self.temperature == 0.0 and self.edt_var is None


KEYS = frozenset(f.name for f in fields(DecodeConfig))
# every key from_dict accepts: the fields, the reference scripts' aliases and "calibration"
SETTING_KEYS = KEYS | frozenset(_ALIASES) | {"calibration"}


def _calibration_settings(value: Any, calibrations: Any = None) -> dict[str, Any]:
    """The knobs of a ``calibration`` setting, from its resolver (this module opens no file).

    ``calibrations`` None means the offline resolver,
    :class:`~sample_smart.calibration.registry.CalibrationFiles`: the value is a path (mode
    "epsilon", the file's default threshold) or {"path", "mode": "topk"|"epsilon", "threshold"}.
    A server passes its :class:`~sample_smart.calibration.registry.CalibrationRegistry`: the value
    is a name or {"name", "mode", "threshold"}; nothing is read, an unknown name is refused."""
    if calibrations is None:
        from sample_smart.calibration.registry import CalibrationFiles

        calibrations = CalibrationFiles()
    ref = calibrations.key
    allowed = f"a calibration {ref}, or {{'{ref}': ..., 'mode': 'topk'|'epsilon'|..., 'threshold': c}} with 0 < c <= 1"
    mode, threshold = "epsilon", None
    if isinstance(value, str):
        target = value
    elif isinstance(value, Mapping):
        unknown = set(value) - {ref, "mode", "threshold"}
        if unknown or ref not in value:
            raise _bad("calibration", value, allowed)
        target, mode, threshold = value[ref], value.get("mode", "epsilon"), value.get("threshold")
        if not isinstance(mode, str):  # which modes a file supports, its loader says
            raise _bad("calibration.mode", mode, "'epsilon', 'topk' (grid calibrations) or 'greedy_threshold'")
        if threshold is not None:
            threshold = _in_range(
                "calibration.threshold",
                _as_float("calibration.threshold", threshold, "0 < c <= 1"),
                0.0,
                1.0,
                "0 < c <= 1",
                lo_open=True,
            )
    else:
        raise _bad("calibration", value, allowed)
    if not isinstance(target, str):
        raise _bad("calibration", value, allowed)
    return calibrations.settings(target, mode, threshold)


# ------------------------------------------------------------------ the knob table
@dataclass(frozen=True)
class Knob:
    """How a request spells one setting: ``parse(value)`` gives the normalised value (None: off) or
    raises ValueError naming the key, the value and ``allowed``; ``help`` and ``cli_type`` make its
    CLI flag (``sample-smart eval --<key>``)."""

    key: str
    parse: Callable[[Any], Any]
    allowed: str
    help: str
    cli_type: type = float


def _float_knob(
    key: str, lo: float, hi: float, allowed: str, help: str, lo_open: bool = False, off: float | None = None
) -> Knob:
    def parse(value: Any) -> float | None:
        v = _in_range(key, _as_float(key, value, allowed), lo, hi, allowed, lo_open)
        return None if (off is not None and v == off) else v

    return Knob(key, parse, allowed, help)


def _prob_knob(key: str, help: str, name: str) -> Knob:
    return _float_knob(key, 0.0, 1.0, f"0 <= {name} <= 1 (0 = off)", help, off=0.0)


def _parse_temperature(value: Any) -> float:
    t_lo, t_hi = TEMPERATURE_RANGE
    allowed = f"0 (greedy) or {t_lo:g} <= T <= {t_hi:g}"
    t = _in_range("temperature", _as_float("temperature", value, allowed), 0.0, t_hi, allowed)
    if 0.0 < t < t_lo:
        raise _bad("temperature", value, allowed)
    return t


def _parse_top_k(value: Any) -> int | None:
    k = _as_int_in("top_k", value, -1, INT_MAX, f"an integer 1..{INT_MAX} (0 or -1 = off)")
    return None if k in (0, -1) else k


_DTK_ALLOWED = f"exactly 10 integers 0..{INT_MAX} (index 0 = p_max decile [0.9, 1], 0 = greedy), list or 'a,b,...'"


def _parse_dynamic_top_k(value: Any) -> tuple[int, ...]:
    ks = _as_tuple("dynamic_top_k", value, 10, _as_int, _DTK_ALLOWED)
    if any(not 0 <= k <= INT_MAX for k in ks):
        raise _bad("dynamic_top_k", value, _DTK_ALLOWED)
    return ks


_EDT_ALLOWED = (
    f"'N,theta,T0' with N > 0 finite, |theta| <= {EDT_THETA_MAX:g}, "
    f"{TEMPERATURE_RANGE[0]:g} <= T0 <= {TEMPERATURE_RANGE[1]:g}"
)


def _parse_edt(value: Any) -> tuple[float, float, float]:
    n, theta, t0 = _as_tuple("edt_var", value, 3, _as_float, _EDT_ALLOWED)
    if n <= 0 or abs(theta) > EDT_THETA_MAX or not TEMPERATURE_RANGE[0] <= t0 <= TEMPERATURE_RANGE[1]:
        raise _bad("edt_var", value, _EDT_ALLOWED)
    return (n, theta, t0)


_CAL_ALLOWED = (
    f"'A,B,thr' with |A| <= {CAL_ACC_MAX:g}, 0 < B <= {CAL_ACC_MAX:g}, "
    f"0 < thr <= {CAL_ACC_MAX:g} (keep base**A * p**B >= thr)"
)


def _parse_cal_acc(value: Any) -> tuple[float, float, float]:
    a, b, thr = _as_tuple("cal_acc", value, 3, _as_float, _CAL_ALLOWED)
    if abs(a) > CAL_ACC_MAX or not 0 < b <= CAL_ACC_MAX or not 0 < thr <= CAL_ACC_MAX:
        raise _bad("cal_acc", value, _CAL_ALLOWED)
    return (a, b, thr)


_BASE_ALLOWED = "10 or 'e' (the log base of the fit log c = A + B log p)"


def _parse_base(value: Any) -> float:
    if isinstance(value, str):
        if value.strip() not in _BASES:
            raise _bad("cal_acc_base", value, _BASE_ALLOWED)
        return _BASES[value.strip()]
    base = _as_float("cal_acc_base", value, _BASE_ALLOWED)
    if base not in (10.0, math.e):
        raise _bad("cal_acc_base", value, _BASE_ALLOWED)
    return base


_CBO_ALLOWED = "an integer 1..10 (1 = lowest p_max decile [0, 0.1), 10 = [0.9, 1])"

# One entry per DecodeConfig field, in field order: the only place a knob's spelling, range and
# CLI help are written (the rule it drives is declared in sample_smart.processors.rules).
KNOBS: dict[str, Knob] = {
    k.key: k
    for k in (
        Knob(
            "temperature",
            _parse_temperature,
            f"0 (greedy) or {TEMPERATURE_RANGE[0]:g} <= T <= {TEMPERATURE_RANGE[1]:g}",
            "Temperature T (0 = greedy).",
        ),
        Knob("edt_var", _parse_edt, _EDT_ALLOWED, "EDT 'N,theta,T0': T = T0 * N^(theta/H), H in nats.", str),
        Knob("top_k", _parse_top_k, f"an integer 1..{INT_MAX} (0 or -1 = off)", "Top-k.", int),
        _float_knob("top_p", 0.0, 1.0, "0 < top_p <= 1 (1 = off)", "Nucleus mass p.", lo_open=True, off=1.0),
        _prob_knob("min_p", "Min-p: keep p >= min_p * p_max.", "min_p"),
        _prob_knob("prob_threshold", "Epsilon sampling: keep p >= eps.", "prob_threshold"),
        _prob_knob("hewitt_epsilon", "Eta sampling epsilon: keep p >= min(eps, sqrt(eps) exp(-H)).", "hewitt_epsilon"),
        Knob(
            "dynamic_top_k",
            _parse_dynamic_top_k,
            _DTK_ALLOWED,
            "Calibrated-TopK: 10 comma-separated K, index 0 = p_max decile [0.9, 1].",
            str,
        ),
        _prob_knob("greedy_threshold", "Greedy-Threshold t: argmax only when p_max < t.", "greedy_threshold"),
        Knob(
            "confidence_bin_only",
            lambda v: _as_int_in("confidence_bin_only", v, 1, 10, _CBO_ALLOWED),
            _CBO_ALLOWED,
            "Sample only when p_max is in decile 1..10 (1 = [0, 0.1)), else greedy.",
            int,
        ),
        Knob("cal_acc", _parse_cal_acc, _CAL_ALLOWED, "Calibrated-epsilon 'A,B,thr': keep base^A p^B >= thr.", str),
        Knob("cal_acc_base", _parse_base, _BASE_ALLOWED, "Log base of --cal-acc: 10 (reference) or e.", str),
        _float_knob(
            "top_n_sigma",
            0.0,
            N_SIGMA_MAX,
            f"0 < n <= {N_SIGMA_MAX:g}",
            "Top-n-sigma: keep logit >= max - n*std.",
            lo_open=True,
        ),
        _prob_knob("top_a", "Top-a: keep p >= a * p_max^2.", "top_a"),
    )
}


def _normalise_fields(cfg: DecodeConfig) -> dict[str, Any]:
    """Validate every field and return the normalised values (tuples, floats, ints, None for off)."""
    out: dict[str, Any] = {}
    for key, knob in KNOBS.items():
        value = getattr(cfg, key)
        out[key] = None if value is None else knob.parse(value)
    return out


if tuple(KNOBS) != tuple(f.name for f in fields(DecodeConfig)):  # pragma: no cover - a developer's slip
    raise ImportError("sample_smart.config: KNOBS must list exactly the DecodeConfig fields, in order")
