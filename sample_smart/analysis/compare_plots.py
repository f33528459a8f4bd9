"""Figures of a comparison run (matplotlib Agg canvas, no pyplot state).

Units are in every axis label: entropy in nats over the full vocabulary of the raw next-token
distribution; p_next is the raw probability of the observed next token; KL(P_base || P_other)
in nats, log-scaled axes say so. Histogram bins are stated in the titles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sample_smart.figures import new_figure, save_figure

from .compare import KL_PERCENTILES, _percentile_name


def _note(fig, manifest: dict) -> None:
    mode = "teacher-forced (aligned positions)" if manifest["mode"] == "teacher_forced" else "generation (own tokens)"
    fig.supxlabel(f"{manifest['experiment_name']}: {mode}; raw distributions, full vocabulary, natural log", fontsize=7)


def _histograms(
    frames: dict, column: str, bins, path: str | Path, manifest: dict, *, xlabel: str, title: str, unit: str = ""
) -> Path:
    fig = new_figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, df in frames.items():
        w = np.full(len(df), 1.0 / max(len(df), 1))
        ax.hist(
            df[column],
            bins=bins,
            weights=w,
            histtype="step",
            lw=1.4,
            label=f"{name} (mean {df[column].mean():.3f}{unit}, n={len(df)})",
        )
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of positions (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    _note(fig, manifest)
    return save_figure(fig, path)


def plot_entropy(frames: dict, path: str | Path, manifest: dict) -> Path:
    """Entropy distribution per model (step histograms, shared bins of 0.1 nats)."""
    top = max(float(df["entropy"].max()) for df in frames.values() if len(df))
    return _histograms(
        frames,
        "entropy",
        np.arange(0.0, top + 0.2, 0.1),
        path,
        manifest,
        unit=" nats",
        xlabel="entropy H of the next-token distribution (nats)",
        title="Entropy per position, bins of 0.1 nats",
    )


def plot_p_next(frames: dict, path: str | Path, manifest: dict) -> Path:
    """Probability of the next token per model (step histograms, bins of 0.02)."""
    return _histograms(
        frames,
        "p_next",
        np.linspace(0.0, 1.0, 51),
        path,
        manifest,
        xlabel="p(next token) under the model (probability, raw distribution)",
        title="Probability of the next token, bins of 0.02",
    )


def plot_quantiles(quant, path: str | Path, manifest: dict) -> Path:
    """Mean entropy (nats) and mean p_next per entropy quantile, per model."""
    fig = new_figure(figsize=(9, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for name, g in quant.groupby("model", sort=False):
        left.plot(g["quantile"], g["entropy_mean_nats"], marker="o", label=name)
        right.plot(g["quantile"], g["p_next_mean"], marker="o", label=name)
    left.set_xlabel("entropy quantile (1 = lowest; equal-count bins\nof each model's own entropy)")
    left.set_ylabel("mean entropy in the bin (nats)")
    right.set_xlabel("entropy quantile (1 = lowest)")
    right.set_ylabel("mean p(next token) in the bin (probability)")
    left.legend(fontsize=7)
    left.set_title("Mean entropy per quantile", fontsize=10)
    right.set_title("Mean p(next) per entropy quantile", fontsize=10)
    _note(fig, manifest)
    return save_figure(fig, path)


def plot_kl(readouts: dict, pairs, path: str | Path, manifest: dict) -> Path:
    """Per pair: the KL percentiles (nats, log scale) and the Delta p histogram."""
    fig = new_figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = [_percentile_name(q) for q in reversed(KL_PERCENTILES)]
    positive = any((r["kl_percentiles"]["max"] or 0) > 0 for r in readouts.values())
    for key, r in readouts.items():
        vals = [r["kl_percentiles"][n] for n in names]
        shown = [v if v is not None and v > 0 else np.nan for v in vals] if positive else vals
        left.plot(
            range(len(names)),
            shown,
            marker="o",
            label=f"{r['base']} || {r['other']}: mean {r['mean_kl']:.3g} ± {r['mean_kl_se'] or 0:.2g} nats",
        )
        g = pairs[(pairs["base"] == r["base"]) & (pairs["other"] == r["other"])]
        lim = max(float(np.abs(g["delta_p"]).max()), 1e-6)
        right.hist(
            g["delta_p"],
            bins=np.linspace(-lim, lim, 61),
            histtype="step",
            lw=1.4,
            label=f"{r['other']} - {r['base']}: RMS {r['rms_delta_p']:.3g}",
        )
    left.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
    if positive:
        left.set_yscale("log")
    else:  # every KL is exactly 0 (e.g. a model against itself): nothing to draw on a log axis
        left.text(0.5, 0.3, "KL = 0 at every position", transform=left.transAxes, ha="center")
    left.set_xlabel("percentile of the per-position KL (min ... max; 0 not drawn on log scale)")
    left.set_ylabel("KL(P_base || P_other), nats" + (" (log scale)" if positive else ""))
    left.set_title("KL divergence percentiles, exact over the full vocabulary", fontsize=10)
    left.legend(fontsize=7)
    right.set_yscale("log")
    right.set_xlabel("Δp = p_other(next) - p_base(next) (probability)")
    right.set_ylabel("positions (count, log scale)")
    right.set_title("Δp of the reference token, 60 equal bins", fontsize=10)
    right.legend(fontsize=7)
    _note(fig, manifest)
    return save_figure(fig, path)


def plot_all(prefix: str, frames: dict, pairs, quant, readouts: dict, manifest: dict) -> dict[str, str]:
    """Write every figure of the run; return {key: path}."""
    files = {
        "plot_entropy": str(plot_entropy(frames, f"{prefix}_entropy.png", manifest)),
        "plot_p_next": str(plot_p_next(frames, f"{prefix}_p_next.png", manifest)),
        "plot_entropy_quantiles": str(plot_quantiles(quant, f"{prefix}_entropy_quantiles.png", manifest)),
    }
    if readouts and pairs is not None:
        files["plot_kl"] = str(plot_kl(readouts, pairs, f"{prefix}_kl.png", manifest))
    return files
