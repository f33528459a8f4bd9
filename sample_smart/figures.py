"""The one way the library makes and saves a figure: matplotlib's ``Figure`` on the Agg canvas
(no display, no pyplot state, safe in servers and threads), written with :func:`save_figure`.

The figures themselves live with their layer: calibration figures in
:mod:`sample_smart.calibration.plots`, study, comparison and decision-token figures in
:mod:`sample_smart.analysis`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DPI", "new_figure", "save_figure"]

DPI = 120


def new_figure(*args: Any, **kwargs: Any):
    """``matplotlib.figure.Figure(*args, **kwargs)``; a clear RuntimeError without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("plots need matplotlib: pip install 'sample_smart[plots]'") from exc
    return Figure(*args, **kwargs)


def save_figure(fig: Any, path: str | Path, *, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` (parent folders made; the format from the suffix) at ``DPI``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
