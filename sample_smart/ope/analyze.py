"""Phase 2 of OPE: estimates, intervals and weight diagnostics per target policy, against the oracle.

``analyze(run_dir)`` reads ``run.json``, ``records.jsonl`` and, when present, ``oracle.jsonl``
(written by :mod:`.prepare`), and returns (and with ``output_dir`` writes) the result:

* ``ope_results.json``: per policy the weight diagnostics (:mod:`.diagnostics`), every estimator x
  variant (:mod:`.estimators`: estimate, influence-function se, 95% CI) and, with the oracle, the
  truth (the target decoder's accuracy on its own fresh responses; mean over responses, se
  cluster-robust by prompt, normal 95% CI) with each estimate's error (estimate - truth) and
  whether its CI covers the truth;
* ``ope_table.md``: the same as markdown tables; ``ope_estimates.png``: estimates with CIs against
  the truth per policy (:mod:`.plots`).

Values are accuracies: the share of responses whose extracted answer equals the gold answer.
``pi_clone``'s max |log w| must be <= 1e-6, else :class:`~.diagnostics.CloneCheckError`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sample_smart.ope.diagnostics import check_clone, weight_diagnostics
from sample_smart.ope.estimators import Estimate, cluster_se, crossfit, estimate_all, isotonic_fit, isotonic_predict
from sample_smart.ope.policies import CLONE
from sample_smart.ope.records import ORACLE_SCHEMA, RECORD_SCHEMA, decode_logp, iter_records

RESULTS_SCHEMA = "sample_smart.ope_results/1"


def _truth(rows: list[dict]) -> Estimate:
    y = np.array([float(r["oracle_label"]) for r in rows])
    v = float(y.mean())
    return Estimate(v, cluster_se(y - v, [r["prompt_id"] for r in rows]))


def analyze(run_dir: str | Path, *, output_dir: str | Path | None = None, oracle: bool | None = None) -> dict[str, Any]:
    """Run phase 2 (module doc). ``oracle``: True requires ``oracle.jsonl``, False ignores it,
    None uses it when present."""
    from sample_smart.io_checks import read_json_file

    run_dir = Path(run_dir)
    run = read_json_file(run_dir / "run.json")
    if not isinstance(run, dict) or not isinstance(run.get("targets"), dict) or not run["targets"]:
        raise ValueError(f"{run_dir / 'run.json'}: field 'targets': must be an object of the run's target policies")
    policies = list(run["targets"])
    rec_path = run_dir / "records.jsonl"
    records = []
    for lineno, rec in iter_records(rec_path, RECORD_SCHEMA):
        missing = [p for p in policies if p not in rec["target_logps"]]
        if missing:
            raise ValueError(f"{rec_path}:{lineno}: record {rec['prompt_id']!r}: target_logps lacks {missing}")
        records.append(rec)
    if len(records) < 2:
        raise ValueError(f"{rec_path}: {len(records)} records; the estimators need at least 2")
    orc_path = run_dir / "oracle.jsonl"
    use_oracle = orc_path.exists() if oracle is None else oracle
    if use_oracle and not orc_path.exists():
        raise ValueError(f"{orc_path}: no such file; run `sample-smart ope prepare --oracle-samples K` first")
    fresh_rows: dict[str, list[dict]] = defaultdict(list)
    if use_oracle:
        for _, rec in iter_records(orc_path, ORACLE_SCHEMA):
            fresh_rows[rec["policy"]].append(rec)

    pids = [r["prompt_id"] for r in records]
    y = np.array([float(r["oracle_label"]) for r in records])
    s = np.array([r["judge_score"] for r in records], float)
    mass = np.array([r["judge_mass"] for r in records], float)
    total = np.array([decode_logp(r["total_logprob"]) for r in records])
    outcomes = {"raw": s, "cal": crossfit(s, y, pids), "cal_w": crossfit(s, y, pids, weights=mass)}
    fits = {"cal": isotonic_fit(s, y), "cal_w": isotonic_fit(s, y, mass)}

    result: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "run_dir": str(run_dir),
        "run_key": run.get("run_key"),
        "n_records": len(records),
        "n_prompts": len(set(pids)),
        "logged_accuracy": _truth(records).to_dict(),
        "judge": {"mean_score": float(s.mean()), "mean_mass": float(mass.mean()), "auc_vs_label": _auc(s, y)},
        "conventions": {
            "value": "accuracy (share of responses with the exact-match correct answer)",
            "log_w": "natural log; processed distributions (temperature + truncation)",
            "se": "influence functions, cluster-robust by prompt; CI = estimate +- 1.96 se",
            "variants": "label: oracle labels as reward; raw: judge p_yes/(p_yes+p_no); cal: isotonic judge->label, "
            "cross-fitted over 5 prompt-hash folds; cal_w: cal weighted by the judge's Yes+No mass",
            "DM": "mean calibrated judge over the target's fresh draws (oracle file), else SNIPS of the outcome model",
        },
        "policies": {},
    }
    for pol in policies:
        lw = np.array([decode_logp(r["target_logps"][pol]) for r in records]) - total
        entry: dict[str, Any] = {"diagnostics": weight_diagnostics(lw)}
        if pol == CLONE:
            entry["clone_max_abs_log_w"] = check_clone(lw)
        fresh = None
        rows = fresh_rows.get(pol, [])
        if rows:
            fs = np.array([r["judge_score"] for r in rows], float)
            fp = [r["prompt_id"] for r in rows]
            fresh = {"raw": (fs, fp), **{k: (isotonic_predict(f, fs), fp) for k, f in fits.items()}}
        ests = estimate_all(lw, y, outcomes, pids, fresh)
        entry["estimates"] = {k: e.to_dict() for k, e in ests.items()}
        if rows:
            truth = _truth(rows)
            covered = {r["prompt_id"] for r in rows}
            entry["truth"] = {**truth.to_dict(), "n": len(rows), "n_prompts": len(covered)}
            if covered != set(pids):  # e.g. an oracle run stopped early: the truth is of other prompts
                entry["truth"]["partial"] = f"the oracle covers {len(covered)} of the {len(set(pids))} logged prompts"
            for k, e in ests.items():
                lo, hi = e.ci
                d = entry["estimates"][k]
                d["error"] = None if not math.isfinite(e.value) else e.value - truth.value
                d["covers_truth"] = bool(lo <= truth.value <= hi) if math.isfinite(e.se) else None
        result["policies"][pol] = entry
    if output_dir is not None:
        from sample_smart.ope.plots import plot_estimates

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ope_results.json").write_text(json.dumps(result, indent=2))
        (out / "ope_table.md").write_text(markdown(result))
        plot_estimates(result, out / "ope_estimates.png")
    return result


def _auc(s: np.ndarray, y: np.ndarray) -> float | None:
    """ROC AUC of the judge score against the labels (ties count 1/2); None with one class."""
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def _fmt(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _small(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if x > 1e-3 else f"{x:.1e}"


def markdown(result: dict[str, Any]) -> str:
    """The result as markdown: diagnostics per policy, then estimates (CI, error, coverage) per policy."""
    pols = list(result["policies"])
    la = result["logged_accuracy"]
    lines = [
        f"OPE of decoders: {result['n_records']} logged responses of pi_0 on {result['n_prompts']} prompts. "
        f"Values are accuracies (share of exact-match correct answers); pi_0's own logged accuracy "
        f"{_fmt(la['estimate'])} [{_fmt(la['ci_low'])}, {_fmt(la['ci_high'])}]. Judge AUC vs labels "
        f"{_fmt(result['judge']['auc_vs_label'])}, mean Yes+No mass {_fmt(result['judge']['mean_mass'])}.",
        "",
        "**Weight diagnostics** (w = pi/pi_0 on the logged responses; natural-log weights of processed distributions)",
        "",
        "| policy | ESS | ESS % | max w | zero-weight share | top-5% weight share | Hill alpha | max abs log w |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pols:
        d = result["policies"][p]["diagnostics"]
        lines.append(
            f"| {p} | {_fmt(d['ess'], 1)} | {_fmt(d['ess_pct'], 1)} | {_fmt(d['max_weight'], 3)} | "
            f"{_fmt(d['zero_share'], 3)} | {_fmt(d['top5_share'], 3)} | {_fmt(d['hill_alpha'], 2)} | "
            f"{_small(d['max_abs_log_w'])} |"
        )
    lines += [
        "",
        "**Estimates** (95% CI; with the oracle: error = estimate - truth, and * when the CI covers the truth)",
        "",
        "| estimator | " + " | ".join(pols) + " |",
        "|---|" + "---|" * len(pols),
    ]
    if all("truth" in result["policies"][p] for p in pols):
        cells = []
        for p in pols:
            t = result["policies"][p]["truth"]
            cells.append(f"**{_fmt(t['estimate'])}** [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}] (n={t['n']})")
        lines.append("| **truth (oracle)** | " + " | ".join(cells) + " |")
    names = list(next(iter(result["policies"].values()))["estimates"])
    for k in names:
        cells = []
        for p in pols:
            e = result["policies"][p]["estimates"][k]
            cell = f"{_fmt(e['estimate'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"
            if "error" in e:
                cell += f" err {_fmt(e['error'], 3)}{' *' if e['covers_truth'] else ''}"
            cells.append(cell)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
