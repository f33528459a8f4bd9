"""Figures and tables of decision-token probabilities over training (matplotlib Agg canvas, files only).

Inputs: a trainer's ``trainer_state.json`` (its ``log_history`` entries with ``eval_decision_*``
keys, as :class:`~sample_smart.integrations.decision_callback.DecisionTokenCallback` logs them)
and/or per-example JSONL of schema ``sample_smart.decision/1`` (the callback's ``jsonl_path`` or
``sample-smart decision extract``), grouped by ``step`` (or by ``model`` when a record has no step).

* ``evolution.png``: mass, accuracy, confidence and ECE, and each p_class, against the step
  (from the trainer state when given, else summarised from the JSONL);
* ``reliability.png``: per checkpoint, accuracy of the argmax class per confidence bin, for
  the raw confidence max_c p_c and the renormalised max_c p_c / mass; 10 equal-width bins,
  bin = min(floor(10 c), 9) (:class:`sample_smart.calibration.buckets.BucketCalibrator`), counts under it;
* ``confidence_hist.png``: histograms of the raw confidence and of the mass per checkpoint (20 bins of 0.05);
* ``summary.json`` / ``summary.md``: the table of every measurement (also printed).

All probabilities are of the raw softmax at the answer position (no temperature, no truncation),
first-token convention (:mod:`sample_smart.analysis.decision`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .decision import DECISION_SCHEMA, ECE_BIN_RULE, ECE_BINS, summarize

_PREFIX = "eval_decision_"
_CONV = (
    "raw softmax at the answer position, first-token probability per label variant;\n"
    "mass = sum of p_class; confidence = max p_class (raw), renorm = max p_class / mass"
)


def read_trainer_state(path: str | Path) -> list[dict[str, Any]]:
    """The ``eval_decision_*`` entries of a trainer state's log_history: ``[{"step", <metric>: ...}]``."""
    path = Path(path)
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise ValueError(f"{path}: not a trainer_state.json (no log_history list)")
    rows = []
    for i, entry in enumerate(state["log_history"]):
        if isinstance(entry, dict) and any(k.startswith(_PREFIX) for k in entry):
            if not isinstance(entry.get("step"), (int, float)):
                raise ValueError(f"{path}: log_history[{i}] has decision keys but no numeric 'step'")
            rows.append(
                {"step": int(entry["step"]), **{k[len(_PREFIX) :]: entry[k] for k in entry if k.startswith(_PREFIX)}}
            )
    if not rows:
        raise ValueError(f"{path}: no {_PREFIX}* entries in log_history (was the DecisionTokenCallback attached?)")
    return rows


def read_decision_jsonl(path: str | Path) -> dict[Any, list[dict[str, Any]]]:
    """Per-example records grouped by step (or model); bad lines raise ``path:line: ...``."""
    from sample_smart.traces.reader import read_records

    groups: dict[Any, list[dict[str, Any]]] = {}
    for rec in read_records(path, schema=DECISION_SCHEMA):
        key = rec.get("step") if rec.get("step") is not None else str(rec.get("model", path))
        groups.setdefault(key, []).append(rec)
    if not groups:
        raise ValueError(f"{path}: no decision records")
    return groups


def classes_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
    for r in records:
        if r.get("answer_pos") is not None:
            return [k[2:] for k in r if k.startswith("p_")]
    return []


def summarize_groups(groups: Mapping[Any, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One summary row per group (:func:`sample_smart.analysis.decision.summarize`)."""
    rows = []
    for key, recs in groups.items():
        found = [r for r in recs if r.get("answer_pos") is not None]
        row = summarize(found, classes_of(recs), n_missing=len(recs) - len(found))
        rows.append({"step": key, **row})
    return rows


def _pick(keys: Sequence[Any], most: int) -> list[Any]:
    if len(keys) <= most:
        return list(keys)
    idx = np.unique(np.linspace(0, len(keys) - 1, most).round().astype(int))
    return [keys[i] for i in idx]


def _sorted_keys(groups: Mapping[Any, Any]) -> list[Any]:
    return sorted(groups, key=lambda k: (not isinstance(k, (int, float)), k if isinstance(k, (int, float)) else str(k)))


def plot_evolution(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    from sample_smart.figures import new_figure, save_figure

    rows = sorted(rows, key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    fig = new_figure(figsize=(10.0, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for key, label, style in (
        ("prob_mass", "mass = sum of p_class", "-o"),
        ("accuracy", "accuracy (argmax class)", "-s"),
        ("confidence", "confidence = max p_class (raw)", "--^"),
        ("confidence_renorm", "confidence renorm = max p_class / mass", ":v"),
    ):
        top.plot(steps, [r.get(key, math.nan) for r in rows], style, label=label, ms=4)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("mean over eval examples")
    top.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    n = rows[-1].get("n")
    top.set_title(
        title or f"Decision tokens during fine-tuning ({int(n) if n is not None else '?'} eval examples)", fontsize=10
    )
    for c in classes:
        bottom.plot(steps, [r.get(f"p_{c}", math.nan) for r in rows], "-o", ms=3, label=f"mean p_{c}")
    bottom.plot(steps, [r.get("ece", math.nan) for r in rows], "k--", label=f"ECE of raw confidence ({ECE_BINS} bins)")
    bottom.plot(steps, [r.get("ece_renorm", math.nan) for r in rows], "k:", label="ECE of renorm confidence")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("training step (optimizer updates)")
    bottom.set_ylabel("probability / ECE")
    bottom.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.supxlabel(f"{_CONV}\nECE: {ECE_BIN_RULE}, |accuracy - mean confidence| weighted by bin share", fontsize=6.5)
    return save_figure(fig, path)


def plot_reliability_grid(groups: Mapping[Any, Sequence[Mapping[str, Any]]], path: str | Path, most: int = 6) -> Path:
    from sample_smart.calibration.buckets import BucketCalibrator
    from sample_smart.figures import new_figure, save_figure

    keys = _pick(_sorted_keys(groups), most)
    fig = new_figure(figsize=(3.0 * len(keys), 4.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, len(keys), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=False))
    centres = (np.arange(ECE_BINS) + 0.5) / ECE_BINS
    for j, key in enumerate(keys):
        graded = [r for r in groups[key] if r.get("correct") is not None and r.get("answer_pos") is not None]
        top, bottom = axes[0, j], axes[1, j]
        top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        if graded:
            corr = [bool(r["correct"]) for r in graded]
            for field, colour, label, off in (
                ("confidence", "tab:blue", "raw", -0.022),
                ("confidence_renorm", "tab:orange", "renorm", 0.022),
            ):
                cal = BucketCalibrator(n_buckets=ECE_BINS).fit([r[field] for r in graded], corr)
                pop = cal.counts_ > 0
                top.bar(
                    centres[pop] + off,
                    cal.accuracy_[pop],
                    width=0.04,
                    color=colour,
                    alpha=0.8,
                    label=f"{label}: ECE {cal.ece_:.3f}",
                )
                bottom.bar(centres + off, cal.counts_, width=0.04, color=colour, alpha=0.8)
        top.set_ylim(0, 1)
        top.set_title(f"step {key}" if isinstance(key, (int, float)) else str(key)[-28:], fontsize=9)
        top.legend(fontsize=6.5, loc="upper left")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence", fontsize=8)
        if j == 0:
            top.set_ylabel("accuracy of argmax class")
            bottom.set_ylabel("count")
    fig.suptitle(f"Reliability per checkpoint: {ECE_BIN_RULE}", fontsize=9)
    fig.supxlabel(_CONV, fontsize=6.5)
    return save_figure(fig, path)


def plot_confidence_hist(groups: Mapping[Any, Sequence[Mapping[str, Any]]], path: str | Path, most: int = 6) -> Path:
    from matplotlib import colormaps

    from sample_smart.figures import new_figure, save_figure

    keys = _pick(_sorted_keys(groups), most)
    fig = new_figure(figsize=(8.4, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    edges = np.linspace(0, 1, 21)
    cmap = colormaps["viridis"]
    for j, key in enumerate(keys):
        found = [r for r in groups[key] if r.get("answer_pos") is not None]
        colour = cmap(j / max(1, len(keys) - 1))
        label = f"step {key}" if isinstance(key, (int, float)) else str(key)[-20:]
        left.hist([r["confidence"] for r in found], bins=edges, histtype="step", color=colour, lw=1.5, label=label)
        right.hist([r["mass"] for r in found], bins=edges, histtype="step", color=colour, lw=1.5, label=label)
    left.set_xlabel("confidence = max p_class (raw)")
    right.set_xlabel("mass = sum of p_class")
    left.set_ylabel("eval examples per bin (20 bins of 0.05)")
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle("Confidence and mass per checkpoint", fontsize=10)
    fig.supxlabel(_CONV, fontsize=6.5)
    return save_figure(fig, path)


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    cols = [
        "step",
        "n",
        "n_missing",
        "prob_mass",
        *[f"p_{c}" for c in classes],
        "confidence",
        "confidence_renorm",
        "accuracy",
        "ece",
        "ece_renorm",
    ]

    def fmt(col: str, v: Any) -> str:
        if col in ("step", "n", "n_missing") and isinstance(v, float) and v.is_integer():
            return str(int(v))
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c, r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(inputs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Read the inputs, write the figures and the summary into ``out_dir`` (module doc)."""
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in inputs]
    names = ("evolution.png", "reliability.png", "confidence_hist.png", "summary.json", "summary.md")
    targets = {(out_dir / n).resolve() for n in names}
    for p in inputs:
        if p.resolve() in targets:
            raise ValueError(f"{p} is an input and would be overwritten by the output in {out_dir}; choose another -o")
    state_rows: list[dict[str, Any]] = []
    groups: dict[Any, list[dict[str, Any]]] = {}
    for p in inputs:
        if p.suffix == ".json":
            state_rows += read_trainer_state(p)
        else:
            for key, recs in read_decision_jsonl(p).items():
                groups.setdefault(key, []).extend(recs)
    if not state_rows and not groups:
        raise ValueError("no inputs given")
    rows = (
        sorted(state_rows, key=lambda r: r["step"])
        if state_rows
        else summarize_groups({k: groups[k] for k in _sorted_keys(groups)})
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if all(isinstance(r["step"], (int, float)) for r in rows):
        written.append(plot_evolution(rows, out_dir / "evolution.png"))
    if groups:
        written.append(plot_reliability_grid(groups, out_dir / "reliability.png"))
        written.append(plot_confidence_hist(groups, out_dir / "confidence_hist.png"))
    summary = {
        "conventions": _CONV.replace("\n", " "),
        "ece_bins": ECE_BIN_RULE,
        "source": [str(p) for p in inputs],
        "rows": rows,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    table = summary_markdown(rows)
    (out_dir / "summary.md").write_text(
        f"# Decision-token summary\n\nConventions: {_CONV.replace(chr(10), ' ')}. ECE: {ECE_BIN_RULE}.\n\n{table}"
    )
    return {"figures": [str(w) for w in written], "summary": str(out_dir / "summary.json"), "table": table}
