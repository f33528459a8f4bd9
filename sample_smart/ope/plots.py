"""The OPE figure: estimates with 95% CIs against the oracle truth, per target policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sample_smart.figures import new_figure, save_figure

# the estimators the plot shows (all of them are in the table)
SHOWN = ("IPS[label]", "SNIPS[label]", "SNIPS[cal]", "DM[cal]", "DR[cal]", "DR[raw]")


def plot_estimates(result: dict[str, Any], path: str | Path, shown: tuple[str, ...] | None = None) -> Path:
    """One column per policy; per estimator a point with its 95% CI (influence-function se,
    normal); the truth (oracle accuracy and its 95% CI) as a black diamond. y: accuracy."""
    shown = shown or SHOWN
    pols = list(result["policies"])
    fig = new_figure(figsize=(1.6 + 1.7 * len(pols), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / (len(shown) + 1)
    for j, name in enumerate(shown):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(pols):
            e = result["policies"][p]["estimates"].get(name)
            if not e or e["estimate"] is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(e["estimate"])
            lo.append(e["estimate"] - (e["ci_low"] if e["ci_low"] is not None else e["estimate"]))
            hi.append((e["ci_high"] if e["ci_high"] is not None else e["estimate"]) - e["estimate"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=4, capsize=2, label=name)
    tx, ty, tlo, thi = [], [], [], []
    for i, p in enumerate(pols):
        t = result["policies"][p].get("truth")
        if t:
            tx.append(i - 0.4 + width * (len(shown) + 0.5))
            ty.append(t["estimate"])
            tlo.append(t["estimate"] - t["ci_low"])
            thi.append(t["ci_high"] - t["estimate"])
    if tx:
        ax.errorbar(tx, ty, yerr=[tlo, thi], fmt="D", color="black", ms=5, capsize=2, label="truth (oracle)")
    ax.set_xticks(range(len(pols)))
    ax.set_xticklabels(pols)
    ax.set_ylabel("accuracy (share of exact-match correct answers)")
    ax.set_title(f"OPE estimates, 95% CI (influence functions), {result['n_records']} logged responses", fontsize=9)
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, tight=True)
