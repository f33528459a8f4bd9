"""How many tokens each decoder keeps as the model's confidence varies (arXiv 2510.05987, the
illustration of Calibrated-TopK / Calibrated-epsilon against min-p and top-p).

Input: real next-token distributions, one row of raw logits ``[N, V]`` per position (e.g. the
teacher-forced positions of a few texts, :func:`teacher_forced_logits`). For every decoder
(a :class:`~sample_smart.config.DecodeConfig`), the row is processed with
:func:`sample_smart.process` and

    kept(row) = number of finite entries after processing     (the set the sampler draws from)

Rows are grouped by the decile of the **raw** top-1 probability (temperature 1, before any
truncation), ``bin m = min(floor(10 p_max), 9)`` as the decoders and the calibration grid do
(:func:`sample_smart.calibration.p_max_bin`; bins reported 1..10, 1 = [0, 0.1)). Per bin and
decoder the study gives the number of positions and the mean, median, min and max kept-set size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.figures import new_figure, save_figure

__all__ = ["kept_set_sizes", "kept_size_by_bin", "plot_kept_sizes", "teacher_forced_logits"]

CHUNK_ROWS = 128  # rows processed per call: keeps the vocabulary-sized temporaries small


def teacher_forced_logits(backend: Any, examples: Iterable[Any], *, chat_template: bool = True):
    """Raw logits ``[N, V]`` (float32) at every target position of ``examples``
    (:class:`sample_smart.traces.examples.Example` with a target), in example order, from a
    :class:`sample_smart.traces.transformers_backend.TransformersTeacherForcer`; row t is the
    model's distribution of target token t given the prompt and the gold tokens before it."""
    import torch

    from sample_smart.traces.examples import encode_example

    encoded = [encode_example(backend.tokenizer, e, chat_template=chat_template) for e in examples]
    if not encoded:
        raise ValueError("no examples given")
    rows: list[Any] = [None] * len(encoded)
    for i, logits in backend.target_logits(encoded):
        rows[i] = logits.float().cpu()
    return torch.cat(rows, dim=0)


def kept_set_sizes(logits: Any, decoders: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{name: kept[N]}``: the kept-set size of every row under each decoder of ``decoders``
    (name -> DecodeConfig, or a settings dict for ``DecodeConfig.from_dict``)."""
    import torch

    from sample_smart import DecodeConfig, process

    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a [N, V] tensor with N >= 1, got {getattr(logits, 'shape', type(logits))}")
    if not decoders:
        raise ValueError("no decoders given")
    out = {}
    for name, cfg in decoders.items():
        cfg = cfg if isinstance(cfg, DecodeConfig) else DecodeConfig.from_dict(cfg)
        sizes = [
            torch.isfinite(process(logits[s : s + CHUNK_ROWS], cfg)).sum(-1) for s in range(0, len(logits), CHUNK_ROWS)
        ]
        out[name] = torch.cat(sizes).numpy().astype(np.int64)
    return out


def raw_p_max(logits: Any) -> np.ndarray:
    """Top-1 probability of the raw distribution, ``exp(max - logsumexp)`` per row."""
    import torch

    x = logits.double()
    return torch.exp(x.amax(-1) - torch.logsumexp(x, -1)).numpy()


def kept_size_by_bin(p_max: Sequence[float], sizes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The study: per raw p_max decile and decoder, n and mean/median/min/max kept-set size."""
    from sample_smart.calibration import p_max_bin

    bins = p_max_bin(np.asarray(p_max, dtype=np.float64))
    per_decoder = {}
    for name, s in sizes.items():
        s = np.asarray(s)
        if s.shape != bins.shape:
            raise ValueError(f"decoder {name!r}: {s.shape[0]} sizes for {bins.shape[0]} positions")
        rows = []
        for m in range(10):
            sel = s[bins == m]
            stats = (
                {
                    "mean": float(sel.mean()),
                    "median": float(np.median(sel)),
                    "min": int(sel.min()),
                    "max": int(sel.max()),
                }
                if sel.size
                else {"mean": None, "median": None, "min": None, "max": None}
            )
            rows.append({"bin": m + 1, "p_max_range": [m / 10, (m + 1) / 10], "n": int(sel.size), **stats})
        per_decoder[name] = rows
    return {
        "study": "kept_set_size_by_confidence_bin",
        "definition": "kept = finite entries of the processed logits (the sampler's support); "
        "bin b = min(floor(10 p_max), 9) + 1 of the raw p_max (temperature 1, before truncation)",
        "n_positions": int(bins.size),
        "decoders": per_decoder,
    }


def plot_kept_sizes(study: Mapping[str, Any], path: str | Path, stat: str = "mean") -> Path:
    """Kept-set size (log scale) per raw p_max decile, one line per decoder."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat={stat!r} is invalid: allowed 'mean' or 'median'")
    fig = new_figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    for name, rows in study["decoders"].items():
        xs = [r["bin"] for r in rows if r["n"]]
        ys = [r[stat] for r in rows if r["n"]]
        ax.plot(xs, ys, marker="o", label=name)
    first = next(iter(study["decoders"].values()))
    ax.set_xticks(range(1, 11), [f"{(b - 1) / 10:.1f}-{b / 10:.1f}\nn={r['n']}" for b, r in enumerate(first, 1)])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("raw p_max decile (bin = min(floor(10 p_max), 9) + 1); n = positions")
    ax.set_ylabel(f"{stat} kept-set size (tokens, log scale)")
    ax.set_title(f"Tokens kept per decoder vs confidence ({study['n_positions']} real next-token distributions)")
    ax.legend(fontsize=7.5)
    return save_figure(fig, path, tight=True)
