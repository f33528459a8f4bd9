"""The figure of the decoder comparison (arXiv 2510.05987, the accuracy / maj@k / pass@k table of
the decoders): from the ``*_metrics.json`` of ``sample-smart eval`` runs, as read by
:func:`sample_smart.analysis.studies.load_metrics`.

Left: per decoder, accuracy (mean over questions of the share of correct samples), maj@k
(majority vote over the first k samples, ties to the earliest answer) and pass@k (the unbiased
estimator 1 - C(n-c, k)/C(n, k), Chen et al. 2021) at one k. Right: maj@k and pass@k versus k.
All values are fractions of questions (accuracy: of samples) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sample_smart.figures import new_figure, save_figure

__all__ = ["common_k", "plot_decoder_comparison"]


def common_k(rows: Sequence[Mapping[str, Any]]) -> int:
    """The largest k that every run has maj@k and pass@k for (the table's default k)."""
    if not rows:
        raise ValueError("no runs given")
    ks = [set(r["metrics"]["maj_at_k"]) & set(r["metrics"]["pass_at_k"]) for r in rows]
    shared = set.intersection(*ks)
    if not shared:
        raise ValueError("the runs share no k of maj@k and pass@k")
    return max(int(k) for k in shared)


def plot_decoder_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path, k: int | None = None) -> Path:
    """Bars of accuracy, maj@k, pass@k per run (labelled by its ``label``) and their curves over k."""
    k = common_k(rows) if k is None else k
    for r in rows:
        m = r["metrics"]
        if str(k) not in m["maj_at_k"] or str(k) not in m["pass_at_k"]:
            raise ValueError(f"k={k}: run {r['label']!r} has no maj@{k} or pass@{k} (its repeats: {m['repeats']})")
    fig = new_figure(figsize=(12, 4.6))
    bars, curves = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    width = 0.27
    names = ("accuracy", f"maj@{k}", f"pass@{k}")
    for j, name in enumerate(names):
        vals = [
            r["metrics"]["accuracy"] if j == 0 else r["metrics"]["maj_at_k" if j == 1 else "pass_at_k"][str(k)]
            for r in rows
        ]
        xs = [i + (j - 1) * width for i in range(len(rows))]
        bars.bar(xs, vals, width=width, label=name)
        for x, v in zip(xs, vals):
            bars.annotate(f"{v:.3f}", (x, v), ha="center", va="bottom", fontsize=6.5, rotation=90)
    bars.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    bars.set_ylabel("fraction of questions (accuracy: of samples)")
    bars.set_title(f"Decoders at k = {k}")
    bars.legend(fontsize=8)
    for r in rows:
        m = r["metrics"]
        ks = sorted(m["pass_at_k"], key=int)
        (line,) = curves.plot([int(x) for x in ks], [m["pass_at_k"][x] for x in ks], marker="o", label=r["label"])
        ks = sorted(m["maj_at_k"], key=int)
        curves.plot([int(x) for x in ks], [m["maj_at_k"][x] for x in ks], ls="--", color=line.get_color())
    curves.set_xticks(sorted({int(x) for r in rows for x in r["metrics"]["pass_at_k"]}))
    curves.set_xlabel("k (samples per question)")
    curves.set_ylabel("pass@k (solid), maj@k (dashed)")
    curves.set_title("pass@k and maj@k vs k")
    curves.legend(fontsize=7)
    return save_figure(fig, path, tight=True)
