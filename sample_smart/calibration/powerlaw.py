"""Power-law fit of rank-wise correctness against probability: log c = A + B log p.

The paper (arXiv 2510.05987, section 4, Calibrated-epsilon) observes that over the grid
cells (bin m, rank r) the correctness c(m, r) and the mean probability p(m, r) follow a
power law, c ~= b^A * p^B. We fit it by least squares in log space,

    y_i = log_b c_i,  x_i = log_b p_i,   minimise  sum_i w_i (y_i - A - B x_i)^2,

with w_i = 1 (unweighted) or w_i = h_i, the number of gold hits behind the cell
(weighted; by the delta method Var(log c_hat) ~= (1 - c) / (n c) ~= 1 / h for small c,
so h is the inverse-variance weight). R^2 is computed in log space with the same weights.
Confidence intervals come from a case bootstrap over cells (resample cells with
replacement, refit, percentile interval).

**Every fit names its log base** ``b`` ("e" or 10). The public reference fits in natural
log but applies ``10^A``; a fit copied across bases is silently wrong. Changing base:
log_b' c = log_b c * ln b / ln b', so A' = A ln b / ln b' and B' = B (``PowerLawFit.to_base``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sample_smart.io_checks import bad_field, is_finite_number, is_int

FIT_SCHEMA = "sample_smart.powerlaw_fit/1"
BASES = ("e", 10)


def normalize_base(base: Any) -> str | int:
    """Canonical log base: ``"e"`` or ``10`` (accepts "e", "ln", "10", 10, 10.0)."""
    if isinstance(base, str):
        key = base.strip().lower()
        if key in ("e", "ln", "natural"):
            return "e"
        if key in ("10", "log10"):
            return 10
    elif isinstance(base, (int, float, np.integer, np.floating)) and not isinstance(base, bool):
        if float(base) == 10.0:
            return 10
        if float(base) == math.e:
            return "e"
    raise ValueError(f"log base must be 'e' or 10, got {base!r}")


def ln_base(base: Any) -> float:
    """ln b for a base accepted by ``normalize_base``."""
    return 1.0 if normalize_base(base) == "e" else math.log(10.0)


def to_log(x: Any, base: Any) -> np.ndarray:
    """log_b x (elementwise)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=np.float64)) / ln_base(base)


def convert_coefficients(A: float, B: float, from_base: Any, to_base: Any) -> tuple[float, float]:
    """(A, B) of log c = A + B log p in ``from_base`` expressed in ``to_base`` (B is unchanged)."""
    return A * ln_base(from_base) / ln_base(to_base), B


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted power law c = b^A * p^B, with its log base b and diagnostics."""

    A: float
    B: float
    base: str | int = "e"
    r2: float = float("nan")
    n_cells: int = 0
    weighted: bool = False
    A_ci: tuple[float, float] = (float("nan"), float("nan"))
    B_ci: tuple[float, float] = (float("nan"), float("nan"))
    ci_level: float = 0.95
    n_boot: int = 0
    seed: int | None = None
    excluded: list = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", normalize_base(self.base))
        for name in ("A", "B"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"power-law fit {name} must be finite, got {getattr(self, name)!r}")

    # ---- applying the fit ----------------------------------------------------------
    def log_c(self, p: Any) -> np.ndarray:
        """A + B log_b p: the predicted log_b correctness of a token of probability p."""
        return self.A + self.B * to_log(p, self.base)

    def predict(self, p: Any) -> np.ndarray:
        """Predicted correctness b^A * p^B (computed in log space)."""
        return np.exp(self.log_c(p) * ln_base(self.base))

    def keep(self, p: Any, c_min: float) -> np.ndarray:
        """Calibrated-epsilon kept set: b^A p^B >= c_min, i.e. A + B log_b p >= log_b c_min."""
        _check_threshold(c_min)
        return self.log_c(p) >= float(to_log(c_min, self.base))

    def to_base(self, base: Any) -> "PowerLawFit":
        """The same law expressed in another log base (A rescaled, B unchanged)."""
        base = normalize_base(base)
        scale = ln_base(self.base) / ln_base(base)
        return PowerLawFit(
            A=self.A * scale,
            B=self.B,
            base=base,
            r2=self.r2,
            n_cells=self.n_cells,
            weighted=self.weighted,
            A_ci=tuple(a * scale for a in self.A_ci),
            B_ci=self.B_ci,
            ci_level=self.ci_level,
            n_boot=self.n_boot,
            seed=self.seed,
            excluded=list(self.excluded),
        )

    # ---- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["A_ci"], d["B_ci"] = list(self.A_ci), list(self.B_ci)
        return {
            "schema": FIT_SCHEMA,
            "law": "log_b c = A + B * log_b p  (c = b^A * p^B), b = base",
            "weights": "gold hits per cell" if self.weighted else "none (each cell counts once)",
            "ci_method": f"case bootstrap over cells, {self.n_boot} resamples, percentile interval",
            **d,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fit") -> "PowerLawFit":
        """A fit from its ``to_dict`` form; ValueError naming ``where`` and the field for a
        field of the wrong type (numbers must be JSON numbers, ``weighted`` a JSON boolean)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object for the fit")
        missing = [k for k in ("A", "B", "base") if data.get(k) is None]
        if missing:
            raise ValueError(f"{where}: fit lacks field(s) {', '.join(missing)} (every fit must name its log base)")
        for key in ("A", "B"):
            if not is_finite_number(data[key]):
                raise bad_field(where, key, data[key], "a finite number")
        for key in ("r2", "ci_level"):
            if data.get(key) is not None and not is_finite_number(data[key]):
                raise bad_field(where, key, data[key], "a finite number or null")
        for key in ("n_cells", "n_boot", "seed"):
            if data.get(key) is not None and not is_int(data[key]):
                raise bad_field(where, key, data[key], "an int or null")
        if data.get("weighted") is not None and not isinstance(data["weighted"], bool):
            raise bad_field(where, "weighted", data["weighted"], "a JSON boolean")
        for key in ("A_ci", "B_ci"):
            ci = data.get(key)
            if ci is not None and not (
                isinstance(ci, list) and len(ci) == 2 and all(v is None or is_finite_number(v) for v in ci)
            ):
                raise bad_field(where, key, ci, "a list of two numbers (or nulls)")
        if data.get("excluded") is not None and not isinstance(data["excluded"], list):
            raise bad_field(where, "excluded", data["excluded"], "a list")
        nan2 = (float("nan"), float("nan"))
        try:
            return cls(
                A=float(data["A"]),
                B=float(data["B"]),
                base=data["base"],
                r2=_num(data.get("r2")),
                n_cells=int(data.get("n_cells") or 0),
                weighted=bool(data.get("weighted")),
                A_ci=tuple(_num(v) for v in data.get("A_ci") or nan2),
                B_ci=tuple(_num(v) for v in data.get("B_ci") or nan2),
                ci_level=float(data.get("ci_level") or 0.95),
                n_boot=int(data.get("n_boot") or 0),
                seed=data.get("seed"),
                excluded=list(data.get("excluded") or []),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{where}: bad fit ({exc})") from exc


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _check_threshold(c_min: float) -> None:
    if not (isinstance(c_min, (int, float, np.floating)) and not isinstance(c_min, bool) and 0.0 < float(c_min) <= 1.0):
        raise ValueError(f"threshold c_min must be in (0, 1], got {c_min!r}")


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line along the last axis (vectorised over leading axes)."""
    sw = w.sum(-1)
    mx = (w * x).sum(-1) / sw
    my = (w * y).sum(-1) / sw
    dx = x - mx[..., None]
    sxx = (w * dx * dx).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        B = (w * dx * (y - my[..., None])).sum(-1) / sxx
    return my - B * mx, B


def fit_power_law(
    p: Sequence[float],
    c: Sequence[float],
    weights: Sequence[float] | None = None,
    base: Any = "e",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
    labels: Sequence[Any] | None = None,
) -> PowerLawFit:
    """Fit log_b c = A + B log_b p over points (p_i, c_i), optionally weighted.

    Points with a non-finite or non-positive p or c, or a non-positive weight, are
    excluded and reported in ``fit.excluded`` as ``{"label": ..., "reason": ...}``
    (label = ``labels[i]`` or the index). Needs at least 3 points with distinct p.
    """
    base = normalize_base(base)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if p.shape != c.shape:
        raise ValueError(f"p and c must have the same length, got {p.shape[0]} and {c.shape[0]}")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != p.shape:
        raise ValueError(f"weights must have {p.shape[0]} entries, got {w.shape[0]}")
    if not (0.0 < ci < 1.0):
        raise ValueError(f"ci (confidence level) must be in (0, 1), got {ci!r}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    labels = list(range(p.shape[0])) if labels is None else list(labels)

    reasons = np.full(p.shape, "", dtype=object)
    reasons[~(w > 0)] = "weight <= 0 (no hits)" if weights is not None else "weight <= 0"
    reasons[~(c > 0)] = "c = 0 (log undefined)"
    reasons[~np.isfinite(c)] = "c undefined (empty bin)"
    reasons[~(p > 0)] = "p = 0 (log undefined)"
    reasons[~np.isfinite(p)] = "p undefined (empty bin)"
    excluded = [{"label": labels[i], "reason": str(reasons[i])} for i in np.flatnonzero(reasons != "")]
    ok = reasons == ""
    x, y, w = to_log(p[ok], base), to_log(c[ok], base), w[ok]
    if x.shape[0] < 3 or np.ptp(x) == 0:
        raise ValueError(
            f"a power-law fit needs at least 3 usable cells with distinct p; got {x.shape[0]} "
            f"({len(excluded)} excluded)"
        )
    A, B = (float(v) for v in _wls(x, y, w))
    resid = y - (A + B * x)
    ybar = (w * y).sum() / w.sum()
    ss_tot = (w * (y - ybar) ** 2).sum()
    r2 = float(1.0 - (w * resid**2).sum() / ss_tot) if ss_tot > 0 else float("nan")

    A_ci = B_ci = (float("nan"), float("nan"))
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
        Ab, Bb = _wls(x[idx], y[idx], w[idx])
        good = np.isfinite(Bb)  # resamples that drew a single distinct p cannot be fitted
        if good.sum() < max(10, n_boot // 2):
            raise ValueError("bootstrap failed: too few resamples with distinct p (too few cells)")
        q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
        A_ci = tuple(float(v) for v in np.percentile(Ab[good], q))
        B_ci = tuple(float(v) for v in np.percentile(Bb[good], q))
    return PowerLawFit(
        A=A,
        B=B,
        base=base,
        r2=r2,
        n_cells=int(x.shape[0]),
        weighted=weights is not None,
        A_ci=A_ci,
        B_ci=B_ci,
        ci_level=ci,
        n_boot=n_boot,
        seed=seed,
        excluded=excluded,
    )


def fit_grid(
    grid: Any,
    base: Any = "e",
    weighted: bool = False,
    min_count: int = 1,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
) -> PowerLawFit:
    """Fit the power law over the cells (bin m, rank r) of a ``CalibrationGrid``.

    Excluded cells (reported as ``{"label": [bin, rank], "reason": ...}``): empty bins,
    bins with fewer than ``min_count`` positions, and cells with no gold hit (c = 0).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    n_bins, R = grid.hits.shape
    labels = [[m, r + 1] for m in range(n_bins) for r in range(R)]
    c = grid.c.copy()
    small = (grid.counts > 0) & (grid.counts < min_count)
    c[small, :] = np.nan
    fit = fit_power_law(
        grid.p.reshape(-1),
        c.reshape(-1),
        weights=grid.hits.reshape(-1) if weighted else None,
        base=base,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        labels=labels,
    )
    for item in fit.excluded:
        m = item["label"][0]
        if small[m]:
            item["reason"] = f"bin has {int(grid.counts[m])} < min_count = {min_count} positions"
    return fit
