"""One request's decoder settings.

:class:`DecodeConfig` is immutable and validated on construction. It accepts the keys and
value formats of the reference scripts of "Sample Smart, Not Hard" (arXiv 2510.05987)
so that their users can switch by changing one import:

=====================  ===========================================================  =====================
key                    meaning (the kept set; everything else gets -inf)             allowed values
=====================  ===========================================================  =====================
temperature            logits / T; T = 0 means greedy                               T >= 0, finite
edt_var                entropy-dependent temperature T = T0 * N ** (theta / H),     "N,theta,T0", N > 0,
                       H = entropy (nats) of the untempered row (Zhang et al. 2024)  theta finite, T0 > 0
top_k                  the k most probable tokens (0 or -1: off)                     int >= -1
top_p                  nucleus: smallest prefix with mass >= p (1: off)              0 < p <= 1
min_p                  p >= min_p * p_max (Nguyen et al. 2024)                       0 <= min_p <= 1
prob_threshold         epsilon sampling: p >= eps (Hewitt et al. 2022)               0 <= eps <= 1
hewitt_epsilon         eta sampling: p >= min(eps, sqrt(eps) * exp(-H))             0 <= eps <= 1
dynamic_top_k          top K_m, m = p_max decile; 10 ints, **index 0 = [0.9, 1]**    10 ints >= 0; 0 = greedy
greedy_threshold       if p_max < t keep only the argmax                             0 <= t <= 1
confidence_bin_only    sample only if p_max falls in decile b, else greedy           int 1..10 (1 = lowest)
cal_acc                calibrated-epsilon: keep base**A * p**B >= thr                "A,B,thr", B > 0, thr > 0
cal_acc_base           the log base of the cal_acc fit (reference: 10)               10 or "e"
calibration            a calibration file (``sample-smart calibrate fit``) turned    path, or {"path",
                       into Calibrated-TopK or Calibrated-epsilon knobs              "mode", "threshold"}
top_n_sigma            keep logit >= max - n * std(finite logits) (Tang et al. 2024) n > 0
=====================  ===========================================================  =====================

p_max deciles are ``bin = min(floor(10 * p_max), 9)`` (0-based, 0 = [0, 0.1)), as in the reference
processor; ``dynamic_top_k[9 - bin]`` is the K of a row and ``confidence_bin_only = bin + 1``.

Every error is a :class:`ValueError` whose message names the key, the value received and the
allowed range.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

__all__ = ["DecodeConfig", "KEYS"]

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


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{key}={value!r} is invalid: allowed {allowed}")


def _as_float(key: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad(key, value, allowed)
    try:
        out = float(value)
    except (TypeError, ValueError):
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
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _bad(key, value, allowed)


def _as_list(key: str, value: Any, allowed: str) -> list[Any]:
    """Accept a list/tuple or the reference scripts' "a,b,c" string."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]
        return parts
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _bad(key, value, allowed)


def _as_tuple(key: str, value: Any, length: int, convert, allowed: str) -> tuple:
    """Exactly ``length`` values (a list, tuple or "a,b,..." string), each converted."""
    items = _as_list(key, value, allowed)
    if len(items) != length:
        raise ValueError(f"{key}={value!r} is invalid: got {len(items)} values, allowed {allowed}")
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

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        norm = _normalise_fields(self)
        for name, value in norm.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "DecodeConfig":
        """Build from a dict of the reference scripts' extra_args keys (see module doc).

        Keys whose value is ``None`` are treated as not set. Unknown keys raise ValueError.
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"decoder settings must be a mapping of key -> value, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        d = dict(d)
        calibration = d.pop("calibration", None)
        if calibration is not None:
            for key, value in _calibration_settings(calibration).items():
                if d.get(key) is not None:
                    raise ValueError(f"decoder setting {key!r} given both directly and by 'calibration'")
                d[key] = value
        for raw_key, value in d.items():
            key = _ALIASES.get(raw_key, raw_key)
            if key not in KEYS:
                raise ValueError(
                    f"unknown decoder setting {raw_key!r}: allowed keys are "
                    f"{', '.join(sorted(KEYS | {'calibration'}))}"
                )
            if value is None:
                continue
            if key in kwargs:
                raise ValueError(f"decoder setting {key!r} given twice (as {raw_key!r} and an alias)")
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_calibration(cls, path: str, mode: str = "epsilon", threshold: float | None = None,
                         **extra: Any) -> "DecodeConfig":
        """A Calibrated-TopK (``mode="topk"``) or Calibrated-epsilon (``mode="epsilon"``) decoder
        from a calibration file written by ``sample-smart calibrate fit``; ``extra`` adds other knobs."""
        from sample_smart.calibration import load_decoder_settings

        settings = dict(load_decoder_settings(path, mode, threshold))
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
            and self.top_k is None
            and self.top_p is None
            and self.min_p is None
            and self.prob_threshold is None
            and self.hewitt_epsilon is None
            and self.dynamic_top_k is None
            and self.greedy_threshold is None
            and self.confidence_bin_only is None
            and self.cal_acc is None
            and self.top_n_sigma is None
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


def _calibration_settings(value: Any) -> dict[str, Any]:
    """The knobs of a ``calibration`` setting: a path (mode "epsilon", the file's default
    threshold) or a mapping {"path", "mode": "topk"|"epsilon", "threshold"}."""
    allowed = "a calibration file path, or {'path': ..., 'mode': 'topk'|'epsilon', 'threshold': c}"
    if isinstance(value, str):
        path, mode, threshold = value, "epsilon", None
    elif isinstance(value, Mapping):
        unknown = set(value) - {"path", "mode", "threshold"}
        if unknown or "path" not in value:
            raise _bad("calibration", value, allowed)
        path, mode, threshold = value["path"], value.get("mode", "epsilon"), value.get("threshold")
        if threshold is not None:
            threshold = _in_range("calibration.threshold",
                                  _as_float("calibration.threshold", threshold, "0 < c <= 1"), 0.0, 1.0,
                                  "0 < c <= 1", lo_open=True)
    else:
        raise _bad("calibration", value, allowed)
    from sample_smart.calibration import load_decoder_settings

    try:
        return dict(load_decoder_settings(path, mode, threshold))
    except (OSError, ValueError) as exc:
        raise ValueError(f"calibration={value!r} could not be loaded: {exc}") from exc


def _normalise_fields(cfg: DecodeConfig) -> dict[str, Any]:
    """Validate every field and return the normalised values (tuples, floats, ints, None for off)."""
    out: dict[str, Any] = {}

    def opt_float(name: str, lo: float, hi: float, allowed: str, lo_open=False, off=None):
        value = getattr(cfg, name)
        if value is None:
            return None
        v = _in_range(name, _as_float(name, value, allowed), lo, hi, allowed, lo_open)
        return None if (off is not None and v == off) else v

    out["temperature"] = opt_float("temperature", 0.0, math.inf, "a finite number >= 0 (0 = greedy)")
    out["top_p"] = opt_float("top_p", 0.0, 1.0, "0 < top_p <= 1 (1 = off)", lo_open=True, off=1.0)
    out["min_p"] = opt_float("min_p", 0.0, 1.0, "0 <= min_p <= 1 (0 = off)", off=0.0)
    out["prob_threshold"] = opt_float("prob_threshold", 0.0, 1.0, "0 <= prob_threshold <= 1 (0 = off)", off=0.0)
    out["hewitt_epsilon"] = opt_float("hewitt_epsilon", 0.0, 1.0, "0 <= hewitt_epsilon <= 1 (0 = off)", off=0.0)
    out["greedy_threshold"] = opt_float("greedy_threshold", 0.0, 1.0, "0 <= greedy_threshold <= 1 (0 = off)", off=0.0)
    out["top_n_sigma"] = opt_float("top_n_sigma", 0.0, math.inf, "a finite number > 0", lo_open=True)

    top_k = cfg.top_k
    if top_k is not None:
        allowed = "an integer >= 1 (0 or -1 = off)"
        top_k = _as_int("top_k", top_k, allowed)
        if top_k < -1:
            raise _bad("top_k", cfg.top_k, allowed)
        top_k = None if top_k in (0, -1) else top_k
    out["top_k"] = top_k

    cbo = cfg.confidence_bin_only
    if cbo is not None:
        allowed = "an integer 1..10 (1 = lowest p_max decile [0, 0.1), 10 = [0.9, 1])"
        cbo = _as_int("confidence_bin_only", cbo, allowed)
        if not 1 <= cbo <= 10:
            raise _bad("confidence_bin_only", cfg.confidence_bin_only, allowed)
    out["confidence_bin_only"] = cbo

    dtk = cfg.dynamic_top_k
    if dtk is not None:
        allowed = "exactly 10 integers >= 0 (index 0 = p_max decile [0.9, 1], 0 = greedy), list or 'a,b,...'"
        ks = _as_tuple("dynamic_top_k", dtk, 10, _as_int, allowed)
        if any(k < 0 for k in ks):
            raise _bad("dynamic_top_k", dtk, allowed)
        dtk = ks
    out["dynamic_top_k"] = dtk

    edt = cfg.edt_var
    if edt is not None:
        allowed = "'N,theta,T0' with N > 0, theta finite, T0 > 0"
        n, theta, t0 = _as_tuple("edt_var", edt, 3, _as_float, allowed)
        if n <= 0 or t0 <= 0:
            raise _bad("edt_var", edt, allowed)
        edt = (n, theta, t0)
    out["edt_var"] = edt

    base = cfg.cal_acc_base
    allowed_base = "10 or 'e' (the log base of the fit log c = A + B log p)"
    if isinstance(base, str):
        if base.strip() not in _BASES:
            raise _bad("cal_acc_base", base, allowed_base)
        base = _BASES[base.strip()]
    else:
        base = _as_float("cal_acc_base", base, allowed_base)
        if base not in (10.0, math.e):
            raise _bad("cal_acc_base", cfg.cal_acc_base, allowed_base)
    out["cal_acc_base"] = base

    cal = cfg.cal_acc
    if cal is not None:
        allowed = "'A,B,thr' with A finite, B > 0, thr > 0 (keep base**A * p**B >= thr)"
        a, b, thr = _as_tuple("cal_acc", cal, 3, _as_float, allowed)
        if b <= 0 or thr <= 0:
            raise _bad("cal_acc", cal, allowed)
        cal = (a, b, thr)
    out["cal_acc"] = cal
    return out
