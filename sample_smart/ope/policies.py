"""Policies of an OPE run: a logging decoder pi_0 and named target policies.

A policy is a decoder (:class:`~sample_smart.config.DecodeConfig`, the settings of
``DecodeConfig.from_dict``, e.g. ``{"temperature": 0.7}``, ``{"min_p": 0.1}`` or
``{"calibration": {"path": "docs/calibration/calibration.json", "mode": "epsilon", "threshold": 0.05}}``)
and optionally a prompt change: ``system_prompt``, a text put before the task prompt followed by a
blank line (``system_prompt + "\\n\\n" + prompt``; the tasks here are raw few-shot text, no chat
template). ``pi_clone`` (the logging policy again) is always a target.

File layout (YAML or JSON)::

    logging: {temperature: 1.0}              # pi_0's decoder settings
    targets:
      t_0.7: {temperature: 0.7}              # a decoder: its settings
      pi_bad: {decoder: {temperature: 1.0}, system_prompt: "Answer wrongly."}   # decoder + prompt

A target given as ``{decoder: ..., system_prompt: ...}`` (only those keys) may omit ``decoder``
(then it is pi_0's). Errors are ValueErrors naming ``<where>: <field>``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sample_smart.config import DecodeConfig

CLONE = "pi_clone"
LOGGING = "pi_0"
DEFAULT_LOGGING = {"temperature": 1.0}
UNHELPFUL_PROMPT = "You are a careless assistant. Do not compute anything; guess a random number as the answer."
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_EXTENDED = {"decoder", "system_prompt"}


@dataclass(frozen=True)
class Policy:
    name: str
    decoder: DecodeConfig
    system_prompt: str | None = None

    def prompt(self, text: str) -> str:
        """The prompt this policy answers (module doc)."""
        return text if self.system_prompt is None else f"{self.system_prompt}\n\n{text}"

    def describe(self) -> dict[str, Any]:
        return {"decoder": self.decoder.to_dict(), "system_prompt": self.system_prompt}


def parse_policy(name: str, spec: Any, logging: DecodeConfig | None, where: str) -> Policy:
    """One policy from its spec (module doc)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: policy name {name!r} must match [A-Za-z0-9_.+-]{{1,64}}")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}.{name}: must be an object of decoder settings, got {type(spec).__name__}")
    system = None
    settings: Any = spec
    if spec and set(spec) <= _EXTENDED:
        system = spec.get("system_prompt")
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise ValueError(f"{where}.{name}.system_prompt: must be a non-empty string, got {system!r}")
        settings = spec.get("decoder")
        if settings is None:
            if logging is None:
                raise ValueError(f"{where}.{name}.decoder: missing")
            return Policy(name, logging, system)
    try:
        return Policy(name, DecodeConfig.from_dict(settings), system)
    except ValueError as exc:
        raise ValueError(f"{where}.{name}: {exc}") from None


def build_policies(
    logging: Mapping[str, Any] | None = None, targets: Mapping[str, Any] | None = None, where: str = "policies"
) -> tuple[Policy, dict[str, Policy]]:
    """``(pi_0, {name: target})`` with ``pi_clone`` first among the targets."""
    pi0 = parse_policy(LOGGING, DEFAULT_LOGGING if logging is None else logging, None, f"{where}.logging")
    if pi0.system_prompt is not None:
        raise ValueError(f"{where}.logging: the logging policy takes the task prompt as it is (no system_prompt)")
    if pi0.decoder.is_greedy:
        raise ValueError(f"{where}.logging: a greedy logging policy gives zero weight to every other decoder")
    out = {CLONE: Policy(CLONE, pi0.decoder)}
    for name, spec in (targets or {}).items():
        if name == LOGGING:
            raise ValueError(f"{where}.targets.{name}: {LOGGING!r} is the logging policy's name")
        pol = parse_policy(name, spec, pi0.decoder, f"{where}.targets")
        if name == CLONE and (pol.decoder != pi0.decoder or pol.system_prompt is not None):
            raise ValueError(f"{where}.targets.{CLONE}: must equal the logging policy (it is added automatically)")
        out[name] = pol
    return Policy(LOGGING, pi0.decoder), out


def load_policy_file(path: str | os.PathLike) -> tuple[dict | None, dict]:
    """``(logging settings, targets)`` of a YAML/JSON policy file (module doc)."""
    from sample_smart.io_checks import parse_json_document, read_user_file

    data = read_user_file(path)
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        try:
            doc = yaml.safe_load(data.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
    else:
        doc = parse_json_document(data, path)
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: must be an object with 'logging' and 'targets'")
    unknown = set(doc) - {"logging", "targets"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}; allowed: logging, targets")
    targets = doc.get("targets") or {}
    if not isinstance(targets, Mapping):
        raise ValueError(f"{path}: field 'targets' must be an object {{name: settings}}")
    return doc.get("logging"), dict(targets)


def parse_target_option(text: str) -> tuple[str, Any]:
    """``NAME=JSON`` (``--target``) -> ``(name, settings)``."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--target {text!r}: expected NAME=JSON, e.g. 't_0.7={{\"temperature\": 0.7}}'")
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--target {name.strip()}: the settings are not JSON ({exc})") from None
