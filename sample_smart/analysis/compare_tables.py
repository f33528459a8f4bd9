"""The aggregate files of a comparison run, rebuilt from its ``PREFIX_tokens.jsonl`` (pandas).

Written next to the run (``PREFIX = <output_dir>/<experiment>_<UTC time>``), CSV always and
Parquet as well when pyarrow imports (Parquet is typed, compressed and column-oriented: the
better format from about a million tokens on; CSV is for people):

* ``PREFIX_tokens_<model>.csv``: every scored position of every prompt for one model
  (entropy in nats, p_next, ln p_next in nats, rank_next 1 = argmax, p_max, top token);
* ``PREFIX_pairs.csv`` (teacher-forced): per aligned position and pair, KL(P_base || P_other)
  in nats, Delta p = p_other(next) - p_base(next), same_top;
* ``PREFIX_by_current_token.csv`` / ``PREFIX_by_next_token.csv``: per model and token, the
  count and the means of entropy (nats), p_next, rank_next, p_max;
* ``PREFIX_entropy_quantiles.csv``: per model, the positions cut into ``n_quantiles``
  equal-count bins of that model's own entropy (``pandas.qcut``: edges are the entropy's
  quantiles, bins (low, high] with the lowest including its low edge = the minimum; duplicate
  edges dropped, so fewer bins when many entropies tie), with the edges (nats), counts, mean
  entropy, mean p_next, share with rank_next = 1 (next token = argmax), mean p_max;
* ``PREFIX_summary_stats.json``: per model n, mean, std, min, max, percentiles of every
  per-token column, perplexity; per pair the exact llama.cpp-style readout
  (:func:`.compare.kl_readout`); skipped prompts;
* ``PREFIX_model_comparison.json``: mean entropy, mean p_next, entropy percentiles, perplexity
  per model side by side, and the pairs' headline numbers;
* the figures of :mod:`.compare_plots`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sample_smart.traces.reader import read_jsonl

from .compare import describe, pair_readouts, percentiles

TOKEN_COLUMNS = (
    "current_id",
    "current_token",
    "next_id",
    "next_token",
    "entropy",
    "p_next",
    "logprob_next",
    "rank_next",
    "p_max",
    "top_id",
    "top_token",
)
UNIT_NAMES = {"entropy": "entropy_nats", "logprob_next": "logprob_next_nats"}
STATS_COLUMNS = ("entropy", "p_next", "logprob_next", "rank_next", "p_max")


def _pandas():
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the comparison tables need pandas: pip install pandas (pyarrow for Parquet)") from exc
    return pd


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a hidden sibling and rename it over ``path`` (readers see old or new, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def parquet_available() -> bool:
    if importlib.util.find_spec("pyarrow") is None:
        return False
    try:
        import pyarrow  # noqa: F401 (only: does it import?)
    except ImportError:
        return False
    return True


def load_run(prefix: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(manifest, records) of a run; a corrupt line raises ``TraceFormatError`` (path:line)."""
    prefix = str(prefix)
    manifest = orjson.loads(Path(f"{prefix}_run.json").read_bytes())
    path = Path(f"{prefix}_tokens.jsonl")
    records = [rec for _, rec in read_jsonl(path)] if path.exists() else []
    records.sort(key=lambda r: r["index"])
    return manifest, records


def token_frames(manifest: dict, records: list[dict]) -> tuple[dict[str, Any], Any]:
    """({model: per-token DataFrame}, pairs DataFrame or None)."""
    pd = _pandas()
    names = list(manifest["models"])
    frames = {}
    for name in names:
        parts = []
        for rec in records:
            cols = rec["models"][name]
            df = pd.DataFrame({c: cols[c] for c in TOKEN_COLUMNS})
            df.insert(0, "position", np.arange(len(df)))
            df.insert(0, "prompt_id", rec["id"])
            parts.append(df)
        empty = pd.DataFrame({c: [] for c in ("prompt_id", "position", *TOKEN_COLUMNS)})
        frames[name] = pd.concat(parts, ignore_index=True) if parts else empty
    pair_parts = []
    for rec in records:
        for key, pc in rec.get("pairs", {}).items():
            base, other = key.split("|")
            df = pd.DataFrame({"kl_nats": pc["kl"], "delta_p": pc["delta_p"], "same_top": pc["same_top"]})
            df.insert(0, "position", np.arange(len(df)))
            df.insert(0, "other", other)
            df.insert(0, "base", base)
            df.insert(0, "prompt_id", rec["id"])
            pair_parts.append(df)
    pairs = pd.concat(pair_parts, ignore_index=True) if pair_parts else None
    return frames, pairs


def _write_table(df, path_stem: str, files: dict, key: str) -> None:
    df.to_csv(f"{path_stem}.csv", index=False)
    files[key] = f"{path_stem}.csv"
    if parquet_available():
        df.to_parquet(f"{path_stem}.parquet", index=False)
        files[f"{key}_parquet"] = f"{path_stem}.parquet"


def by_token(frames: dict[str, Any], key: str) -> Any:
    """Per model and ``key`` token (``current`` or ``next``): count and means, most frequent first."""
    pd = _pandas()
    out = []
    for name, df in frames.items():
        if df.empty:
            continue
        g = (
            df.groupby(f"{key}_id", sort=False)
            .agg(
                token=(f"{key}_token", "first"),
                count=("entropy", "size"),
                entropy_mean_nats=("entropy", "mean"),
                entropy_std_nats=("entropy", "std"),
                p_next_mean=("p_next", "mean"),
                rank_next_mean=("rank_next", "mean"),
                p_max_mean=("p_max", "mean"),
            )
            .reset_index()
            .rename(columns={f"{key}_id": "token_id"})
        )
        g.insert(0, "model", name)
        out.append(g.sort_values(["count", "token_id"], ascending=[False, True]))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def entropy_quantiles(frames: dict[str, Any], n_quantiles: int) -> Any:
    """Per model: ``qcut`` of its entropy into ``n_quantiles`` equal-count bins (edges in nats)."""
    pd = _pandas()
    out = []
    for name, df in frames.items():
        if df.empty:
            continue
        codes, edges = pd.qcut(df["entropy"], n_quantiles, labels=False, retbins=True, duplicates="drop")
        g = (
            df.assign(_bin=codes)
            .groupby("_bin")
            .agg(
                count=("entropy", "size"),
                entropy_mean_nats=("entropy", "mean"),
                p_next_mean=("p_next", "mean"),
                top1_share=("rank_next", lambda r: float((r == 1).mean())),
                p_max_mean=("p_max", "mean"),
                logprob_next_mean_nats=("logprob_next", "mean"),
            )
            .reset_index()
        )
        g.insert(0, "quantile", g["_bin"].to_numpy() + 1)
        g.insert(1, "entropy_low_nats", edges[g["_bin"].to_numpy()])
        g.insert(2, "entropy_high_nats", edges[g["_bin"].to_numpy() + 1])
        g = g.drop(columns="_bin")
        g.insert(0, "model", name)
        out.append(g)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _model_summary(df) -> dict[str, Any]:
    n = len(df)
    lp = df["logprob_next"].to_numpy(np.float64) if n else np.zeros(0)
    return {
        "n_prompts": int(df["prompt_id"].nunique()) if n else 0,
        "n_tokens": int(n),
        **{UNIT_NAMES.get(c, c): describe(df[c].to_numpy(np.float64) if n else []) for c in STATS_COLUMNS},
        "top1_share": float((df["rank_next"] == 1).mean()) if n else None,
        "perplexity": float(math.exp(-lp.mean())) if n else None,
    }


def _pair_columns(frames: dict[str, Any], pairs) -> tuple[dict, dict]:
    per_model = {name: {"logprob_next": df["logprob_next"].to_numpy(np.float64)} for name, df in frames.items()}
    cols = {}
    if pairs is not None:
        for (base, other), g in pairs.groupby(["base", "other"], sort=False):
            cols[f"{base}|{other}"] = {
                "kl": g["kl_nats"].to_numpy(),
                "delta_p": g["delta_p"].to_numpy(),
                "same_top": g["same_top"].to_numpy(bool),
            }
    return per_model, cols


def write_aggregates(
    prefix: str | os.PathLike, *, n_quantiles: int = 10, errors: list[dict] | None = None, plots: bool = True
) -> dict[str, str]:
    """(Re)write every aggregate file of the run at ``prefix`` from its tokens JSONL; return {key: path}.

    ``errors``: the skipped prompts to record in the summary (default: ``PREFIX_errors.jsonl``)."""
    from . import compare_plots

    prefix = str(prefix)
    manifest, records = load_run(prefix)
    if errors is None and Path(f"{prefix}_errors.jsonl").exists():
        errors = [rec for _, rec in read_jsonl(f"{prefix}_errors.jsonl")]
    frames, pairs = token_frames(manifest, records)
    files: dict[str, str] = {
        "run": f"{prefix}_run.json",
        "tokens_jsonl": f"{prefix}_tokens.jsonl",
        "errors": f"{prefix}_errors.jsonl",
        "prompts_dir": f"{prefix}_prompts",
    }
    for name, df in frames.items():
        _write_table(df.rename(columns=UNIT_NAMES), f"{prefix}_tokens_{name}", files, f"tokens_{name}")
    if pairs is not None:
        _write_table(pairs, f"{prefix}_pairs", files, "pairs")
    _write_table(by_token(frames, "current"), f"{prefix}_by_current_token", files, "by_current_token")
    _write_table(by_token(frames, "next"), f"{prefix}_by_next_token", files, "by_next_token")
    quant = entropy_quantiles(frames, n_quantiles)
    _write_table(quant, f"{prefix}_entropy_quantiles", files, "entropy_quantiles")

    per_model, pair_cols = _pair_columns(frames, pairs)
    readouts = pair_readouts(per_model, pair_cols)
    conventions = {
        "units": "entropy, logprob and KL in nats (natural log); p_next, p_max, delta_p are probabilities",
        "distribution": "raw next-token distribution of each model (no temperature, no truncation), full vocabulary",
        "rank": "rank_next = #{v : p(v) >= p(next)}, 1 = argmax",
        "percentiles": "numpy linear interpolation between order statistics",
        "se": "std(ddof=1)/sqrt(n); binomial sqrt(s(1-s)/n) for shares",
        "positions": (
            "teacher-forced: every model scores the same reference tokens (aligned)"
            if manifest["mode"] == "teacher_forced"
            else "generation: each model scores its own generated tokens (not aligned, no KL)"
        ),
    }
    summary = {
        "schema": "sample_smart.compare_summary/1",
        "experiment_name": manifest["experiment_name"],
        "mode": manifest["mode"],
        "backend": manifest["backend"],
        "models": manifest["models"],
        "decoder": manifest.get("decoder"),
        "conventions": conventions,
        "per_model": {name: _model_summary(df) for name, df in frames.items()},
        "pairs": readouts,
        "skipped_prompts": errors or [],
    }
    comparison = {
        "schema": "sample_smart.model_comparison/1",
        "experiment_name": manifest["experiment_name"],
        "mode": manifest["mode"],
        "units": conventions["units"],
        "models": list(frames),
        "mean_entropy_nats": {n: summary["per_model"][n]["entropy_nats"]["mean"] for n in frames},
        "mean_p_next": {n: summary["per_model"][n]["p_next"]["mean"] for n in frames},
        "entropy_percentiles_nats": {n: percentiles(df["entropy"].to_numpy(np.float64)) for n, df in frames.items()},
        "perplexity": {n: summary["per_model"][n]["perplexity"] for n in frames},
        "top1_share": {n: summary["per_model"][n]["top1_share"] for n in frames},
        "pairs": {
            k: {
                f: r[f]
                for f in (
                    "base",
                    "other",
                    "n_positions",
                    "mean_kl",
                    "mean_kl_se",
                    "same_top_share",
                    "same_top_share_se",
                    "mean_delta_p",
                    "rms_delta_p",
                    "ln_ppl_ratio",
                )
            }
            for k, r in readouts.items()
        },
    }
    for key, obj in (("summary_stats", summary), ("model_comparison", comparison)):
        path = Path(f"{prefix}_{key}.json")
        write_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        files[key] = str(path)
    if plots and records:
        files.update(compare_plots.plot_all(prefix, frames, pairs, quant, readouts, manifest))
    return files
