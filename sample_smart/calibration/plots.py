"""Calibration figures, written to files (matplotlib's Agg canvas; no display, no pyplot state).

Each figure states its conventions on the figure itself: the p_max bins
(bin = min(floor(10 p_max), 9)), 1-based ranks, the log base of a fit, and that the
grid was measured on the RAW (untempered, unprocessed) distribution.

- ``plot_grid_heatmap``: c(m, r) = P(gold at rank r | p_max bin m), log colour scale.
- ``plot_powerlaw_fit``: the grid cells (p(m, r), c(m, r)) on log-log axes and the fitted
  law c = b^A p^B with its base, coefficients, intervals and R^2.
- ``plot_reliability``: 100-bucket reliability diagram (accuracy vs confidence, filled
  buckets marked) with the count histogram under it, and ECE / MCE / adaptive ECE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.figures import new_figure, save_figure

_RAW = "distribution: raw (untempered, unprocessed), teacher-forced"
_BINS = "bins: m = min(floor(10 p_max), 9); ranks 1-based (1 = argmax)"


def _bin_label(m: int, n: int) -> str:
    hi = "1.0]" if m == 9 else f"{(m + 1) / 10:.1f})"
    return f"[{m / 10:.1f}, {hi}  n={n}"


def plot_grid_heatmap(grid: Any, path: str | Path, max_rank: int = 10, title: str | None = None) -> Path:
    """Heatmap of c(m, r), highest p_max bin on top (the decoders' list order)."""
    from matplotlib.colors import LogNorm

    R = min(max_rank, grid.max_rank)
    c = grid.c[::-1, :R]  # row 0 = bin 9
    fig = new_figure(figsize=(1.0 + 0.62 * R, 6.2), layout="constrained")
    ax = fig.add_subplot()
    shown = np.where(c > 0, c, np.nan)
    im = ax.imshow(shown, aspect="auto", cmap="viridis", norm=LogNorm(vmin=1e-3, vmax=1.0))
    for i in range(c.shape[0]):
        for r in range(R):
            if np.isfinite(c[i, r]):
                v = c[i, r]
                txt = f"{v:.2f}" if v >= 0.0095 else ("0" if v == 0 else f"{v:.0e}")
                ax.text(r, i, txt, ha="center", va="center", fontsize=7, color="white" if 0 < v <= 0.1 else "black")
    ax.set_xticks(range(R), [str(r + 1) for r in range(R)])
    ax.set_yticks(range(10), [_bin_label(m, int(grid.counts[m])) for m in range(9, -1, -1)], fontsize=8)
    ax.set_xlabel("rank r of the gold token")
    ax.set_ylabel("p_max bin m")
    fig.colorbar(im, ax=ax, label="c(m, r) = P(gold at rank r | bin m)  (log scale; blank = 0 or empty bin)")
    ax.set_title(title or f"Rank-wise correctness grid ({grid.n_tokens} tokens)", fontsize=10)
    fig.supxlabel(f"{_BINS}; {_RAW}", fontsize=6.5)
    return save_figure(fig, path)


def plot_powerlaw_fit(grid: Any, fit: Any, path: str | Path, title: str | None = None) -> Path:
    """Grid cells and the fitted law c = b^A p^B on log-log axes; excluded cells are not drawn."""
    from matplotlib import colormaps

    p, c = grid.p, grid.c
    ok = np.isfinite(p) & np.isfinite(c) & (p > 0) & (c > 0)
    ranks = np.broadcast_to(np.arange(1, grid.max_rank + 1), p.shape)
    fig = new_figure(figsize=(7.2, 5.6), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["plasma"]
    sizes = 8 + 40 * np.sqrt(grid.hits / max(grid.hits.max(), 1))
    sc = ax.scatter(p[ok], c[ok], c=ranks[ok], cmap=cmap, s=sizes[ok], alpha=0.8, edgecolors="none")
    xs = np.geomspace(p[ok].min() * 0.8, min(1.0, p[ok].max() * 1.2), 200)
    b = "e" if fit.base == "e" else "10"
    log = "ln" if fit.base == "e" else "log10"
    ci = f"{100 * fit.ci_level:.0f}%"
    label = (
        f"{log} c = A + B {log} p (base {b}, {'weighted by hits' if fit.weighted else 'unweighted'})\n"
        f"A = {fit.A:.3f} [{fit.A_ci[0]:.3f}, {fit.A_ci[1]:.3f}], "
        f"B = {fit.B:.3f} [{fit.B_ci[0]:.3f}, {fit.B_ci[1]:.3f}] ({ci} bootstrap), R$^2$ = {fit.r2:.3f}"
    )
    ax.plot(xs, fit.predict(xs), color="black", lw=1.5, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("p(m, r): mean probability at rank r in bin m")
    ax.set_ylabel("c(m, r): P(gold at rank r | bin m)")
    fig.colorbar(sc, ax=ax, label="rank r (marker area ~ sqrt(gold hits))")
    ax.legend(loc="upper left", fontsize=7.5)
    ax.set_title(title or f"Power-law fit over {fit.n_cells} grid cells ({len(fit.excluded)} excluded)", fontsize=10)
    fig.supxlabel(f"{_BINS}; cells excluded: empty bins, c = 0\n{_RAW}", fontsize=6.5)
    return save_figure(fig, path)


def plot_reliability(calibrator: Any, path: str | Path, title: str | None = None) -> Path:
    """Reliability diagram of a fitted ``BucketCalibrator`` with the count histogram under it."""
    n = calibrator.n_buckets
    centres = (np.arange(n) + 0.5) / n
    populated = calibrator.counts_ > 0
    fig = new_figure(figsize=(7.0, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    top.bar(
        centres[populated],
        calibrator.accuracy_[populated],
        width=1 / n,
        color="tab:blue",
        alpha=0.7,
        label="empirical accuracy (populated bucket)",
    )
    top.step(
        centres,
        calibrator.filled_,
        where="mid",
        color="tab:orange",
        lw=1,
        label="calibrated value (empty buckets filled toward 0.5)",
    )
    s = calibrator.summary()
    top.text(
        0.02,
        0.97,
        f"ECE = {s['ece']:.4f}\nMCE = {s['mce']:.4f}\nadaptive ECE ({s['adaptive_bins']} bins) = "
        f"{s['adaptive_ece']:.4f}\naccuracy = {s['overall_accuracy_raw']:.4f} (n = {s['n_pairs']})",
        transform=top.transAxes,
        va="top",
        fontsize=8,
    )
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="lower right", fontsize=7.5)
    top.set_title(title or f"Reliability diagram, {n} buckets", fontsize=10)
    bottom.bar(centres, calibrator.counts_, width=1 / n, color="tab:gray")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("count")
    bottom.set_xlabel(f"confidence (bucket k = min(floor({n} c), {n - 1}), width {1 / n:g})")
    bottom.set_xlim(0, 1)
    return save_figure(fig, path)
