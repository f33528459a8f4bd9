"""Figures of the studies in :mod:`sample_smart.analysis.studies` (matplotlib's Figure on the Agg
canvas, saved with :func:`sample_smart.figures.save_figure`).

Every figure states its units in the axis labels: accuracy is the fraction of samples (or
questions) whose extracted answer equals the gold answer; p_max and ranks are of the raw
distribution (before temperature and truncation); bins are left-closed, right-open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sample_smart.figures import new_figure, save_figure


def _binned(study: Mapping[str, Any], path: str | Path, xlabel: str, title: str) -> Path:
    bins = study["bins"]
    labels = [b["bin"] for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    fig = new_figure(figsize=(7, 4))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(bins)), acc, color="#4C72B0")
    for bar, b in zip(bars, bins):
        ax.annotate(
            f"n={b['n']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(range(len(bins)), labels, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (fraction of samples correct)")
    ax.set_title(title)
    return save_figure(fig, path, tight=True)


def plot_low_confidence(study: Mapping[str, Any], path: str | Path) -> Path:
    return _binned(
        study,
        path,
        f"number of generated tokens with raw p_max < {study['threshold']}",
        f"Accuracy vs low-confidence tokens ({study['n_samples']} samples)",
    )


def plot_mean_rank(study: Mapping[str, Any], path: str | Path) -> Path:
    return _binned(
        study,
        path,
        "mean raw rank of the sampled tokens (1 = always the argmax)",
        f"Accuracy by mean sampled-token rank ({study['n_samples']} samples)",
    )


def plot_confidence_vote(study: Mapping[str, Any], path: str | Path) -> Path:
    acc = study["accuracy"]
    fig = new_figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.bar(list(acc), list(acc.values()), color=["#4C72B0", "#55A868", "#C44E52"])
    for i, v in enumerate(acc.values()):
        ax.annotate(f"{v:.3f}", (i, v), ha="center", va="bottom")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (fraction of questions, vote = gold)")
    ax.set_title(
        f"Majority vote conditioned on confidence ({study['n_questions']} questions x "
        f"{study['samples_per_question']} samples)"
    )
    return save_figure(fig, path, tight=True)


def plot_bin_curves(study: Mapping[str, Any], path: str | Path) -> Path:
    from matplotlib import colormaps

    fig = new_figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    for c in study["curves"]:
        lo, hi = c["p_max_range"]
        ax.plot(
            c["k"],
            c["maj_at_k"],
            marker="o",
            color=cmap((c["bin"] - 1) / 9),
            label=f"bin {c['bin']}: p_max in [{lo:.1f}, {hi:.1f})",
        )
    ax.set_xlabel("k (samples per question in the vote)")
    ax.set_ylabel("maj@k accuracy (fraction of questions)")
    ax.set_title("Majority vote vs k, sampling only in one p_max decile (raw p_max)")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, tight=True)
