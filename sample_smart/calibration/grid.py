"""The calibration grid: where the gold token sits, by top-1 probability and rank.

Teacher forcing (arXiv 2510.05987, section 3) gives, at every position t of a labelled
text, the model's RAW distribution (untempered, unprocessed) and the gold next token.
The grid groups positions by the decile of the top-1 probability, exactly as the
decoders do,

    bin m = min(floor(10 * p_max), 9),   m = 0 .. 9,  bin m covers [m/10, (m+1)/10)
                                                     (bin 9 covers [0.9, 1.0])

and, for ranks r = 1 .. R (1 = argmax), accumulates

    n_m        number of positions in bin m
    h(m, r)    positions in bin m whose gold token has rank r       ("hits")
    c(m, r) = h(m, r) / n_m      P(gold at rank r | bin m)            (rank-wise correctness)
    p(m, r) = mean over bin m of the probability at rank r
    C_m     = sum_r p(m, r) c(m, r)                                   (expected bin accuracy)

plus the positions whose gold rank is beyond R and the sum of p_max per bin (for the
mean confidence of the bin). Arrays are indexed by bin in ascending order (index 0 =
[0, 0.1)); the decoders' lists run the other way (see ``derive``).

The grid only holds sums and counts, so it accumulates in a stream (traces bigger than
memory) and two partial grids merge by addition (``merge`` or ``+``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sample_smart.io_checks import bad_field, distinct_inputs, is_int, is_number

from ._io import read_json, write_json

N_BINS = 10
BIN_EDGES = [round(m / N_BINS, 1) for m in range(N_BINS + 1)]
BIN_RULE = "bin = min(floor(10 * p_max), 9); index 0 = [0.0, 0.1), index 9 = [0.9, 1.0]"
GRID_SCHEMA = "sample_smart.calibration_grid/1"
DISTRIBUTION = "raw (untempered, unprocessed) model distribution from teacher forcing"
DEFAULT_MAX_RANK = 20
PROB_SLACK = 1e-5  # float round-off allowed above 1 (as the trace schema)


def p_max_bin(p_max: Any) -> np.ndarray:
    """Decile bin of the top-1 probability, ``min(floor(10 p_max), 9)`` (the decoders' rule).

    Raises ValueError when a value is not a probability (NaN, < 0 or > 1 + 1e-5; values
    in (1, 1 + 1e-5], float round-off of exp(logprob ~ 0), count as 1).
    """
    p = np.asarray(p_max, dtype=np.float64)
    bad = ~((p >= 0.0) & (p <= 1.0 + PROB_SLACK))
    if bad.any():
        raise ValueError(
            f"p_max must be probabilities in [0, 1]; got {p[bad].ravel()[0]!r} "
            f"(at flat index {int(np.flatnonzero(bad.ravel())[0])})"
        )
    return np.minimum(np.floor(p * N_BINS), N_BINS - 1).astype(np.int64)


@dataclass
class CalibrationGrid:
    """Streaming, mergeable counts of the rank-wise correctness grid (see module doc).

    >>> g = CalibrationGrid(max_rank=3)
    >>> g.update(p_max=[0.95, 0.42], gold_rank=[1, 2], top_probs=[[0.95, 0.03, 0.01], [0.42, 0.3, 0.1]])
    >>> g.counts.tolist()
    [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    """

    max_rank: int = DEFAULT_MAX_RANK
    counts: np.ndarray = field(default=None)  # [10] positions per bin
    hits: np.ndarray = field(default=None)  # [10, R] gold at rank r
    beyond: np.ndarray = field(default=None)  # [10] gold rank > R
    prob_sums: np.ndarray = field(default=None)  # [10, R] sum of the probability at rank r
    p_max_sums: np.ndarray = field(default=None)  # [10] sum of p_max
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.max_rank, (int, np.integer)) or isinstance(self.max_rank, bool) or self.max_rank < 1:
            raise ValueError(f"max_rank must be an integer >= 1, got {self.max_rank!r}")
        self.max_rank = int(self.max_rank)
        shapes = {
            "counts": (N_BINS,),
            "hits": (N_BINS, self.max_rank),
            "beyond": (N_BINS,),
            "prob_sums": (N_BINS, self.max_rank),
            "p_max_sums": (N_BINS,),
        }
        for name, shape in shapes.items():
            value = getattr(self, name)
            integer = name in ("counts", "hits", "beyond")
            dtype = np.int64 if integer else np.float64
            if value is None:
                value = np.zeros(shape, dtype=dtype)
            else:
                value = np.asarray(value, dtype=dtype)
                if value.shape != shape:
                    raise ValueError(f"grid field {name!r} must have shape {shape}, got {value.shape}")
                if (value < 0).any():
                    raise ValueError(f"grid field {name!r} must be >= 0")
            setattr(self, name, value)
        self.source = {
            "n_records": int(self.source.get("n_records", 0)),
            "traces": list(self.source.get("traces", [])),
            "models": list(self.source.get("models", [])),
            "backends": list(self.source.get("backends", [])),
        }

    # ---- accumulation -------------------------------------------------------------
    def update(self, p_max: Any, gold_rank: Any, top_probs: Any) -> "CalibrationGrid":
        """Add positions: ``p_max[T]``, 1-based ``gold_rank[T]``, ``top_probs[T, >= R]`` (descending)."""
        p_max = np.asarray(p_max, dtype=np.float64).reshape(-1)
        rank = np.asarray(gold_rank).reshape(-1)
        probs = np.asarray(top_probs, dtype=np.float64)
        n = p_max.shape[0]
        if probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError(f"top_probs must have shape [T, top_k] with T = {n}, got {probs.shape}")
        if rank.shape[0] != n:
            raise ValueError(f"gold_rank must have {n} entries (one per position), got {rank.shape[0]}")
        if n == 0:
            return self
        if probs.shape[1] < self.max_rank:
            raise ValueError(
                f"top_probs has {probs.shape[1]} ranks per position but the grid needs max_rank = "
                f"{self.max_rank}; build the grid with max_rank <= the traces' top_k"
            )
        if not np.issubdtype(rank.dtype, np.integer):
            if not np.all(np.isfinite(rank)) or not np.all(rank == np.round(rank)):
                raise ValueError("gold_rank must hold integers >= 1")
            rank = rank.astype(np.int64)
        if (rank < 1).any():
            raise ValueError(f"gold_rank must be >= 1 (1 = argmax), got {int(rank.min())}")
        probs = probs[:, : self.max_rank]
        if not np.all((probs >= 0) & (probs <= 1 + PROB_SLACK)):
            raise ValueError("top probabilities must lie in [0, 1]")
        probs = np.minimum(probs, 1.0)
        p_max = np.minimum(p_max, 1.0)
        bins = p_max_bin(p_max)
        R = self.max_rank
        self.counts += np.bincount(bins, minlength=N_BINS)
        inside = rank <= R
        self.hits += np.bincount(bins[inside] * R + (rank[inside] - 1), minlength=N_BINS * R).reshape(N_BINS, R)
        self.beyond += np.bincount(bins[~inside], minlength=N_BINS)
        self.p_max_sums += np.bincount(bins, weights=p_max, minlength=N_BINS)
        onehot = np.zeros((N_BINS, n))
        onehot[bins, np.arange(n)] = 1.0
        self.prob_sums += onehot @ probs
        return self

    def update_record(self, record: Mapping[str, Any]) -> "CalibrationGrid":
        """Add one teacher-forced trace record (schema ``sample_smart.teacher_forced/1``)."""
        for key in ("p_max", "gold_rank", "top_logprobs"):
            if key not in record:
                raise ValueError(f"teacher-forced record {record.get('id', '?')!r} lacks field {key!r}")
        base = record.get("log_base", "e")
        if base != "e":
            raise ValueError(f"record {record.get('id', '?')!r}: log_base must be 'e', got {base!r}")
        top = record["top_logprobs"]
        top_probs = np.exp(np.asarray(top, dtype=np.float64)) if len(top) else np.zeros((0, self.max_rank))
        self.update(record["p_max"], record["gold_rank"], top_probs)
        self.source["n_records"] += 1
        for key, dest in (("model", "models"), ("backend", "backends")):
            value = record.get(key)
            if value is not None and str(value) not in self.source[dest]:
                self.source[dest].append(str(value))
        return self

    def update_records(self, records: Iterable[Mapping[str, Any]]) -> "CalibrationGrid":
        for record in records:
            self.update_record(record)
        return self

    def merge(self, other: "CalibrationGrid") -> "CalibrationGrid":
        """A new grid holding both grids' counts (same ``max_rank`` required)."""
        if not isinstance(other, CalibrationGrid):
            raise TypeError(f"can only merge CalibrationGrid objects, got {type(other).__name__}")
        if other.max_rank != self.max_rank:
            raise ValueError(f"cannot merge grids with max_rank {self.max_rank} and {other.max_rank}")
        src = {
            "n_records": self.source["n_records"] + other.source["n_records"],
            **{
                k: self.source[k] + [v for v in other.source[k] if v not in self.source[k]]
                for k in ("traces", "models", "backends")
            },
        }
        return CalibrationGrid(
            max_rank=self.max_rank,
            counts=self.counts + other.counts,
            hits=self.hits + other.hits,
            beyond=self.beyond + other.beyond,
            prob_sums=self.prob_sums + other.prob_sums,
            p_max_sums=self.p_max_sums + other.p_max_sums,
            source=src,
        )

    __add__ = merge

    # ---- derived quantities --------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    def _per_bin(self, sums: np.ndarray) -> np.ndarray:
        n = self.counts.reshape((N_BINS,) + (1,) * (sums.ndim - 1)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, sums / np.maximum(n, 1), np.nan)

    @property
    def c(self) -> np.ndarray:
        """c(m, r) = P(gold at rank r | bin m), shape [10, R]; NaN for empty bins."""
        return self._per_bin(self.hits.astype(np.float64))

    @property
    def p(self) -> np.ndarray:
        """p(m, r) = mean probability at rank r in bin m, shape [10, R]; NaN for empty bins."""
        return self._per_bin(self.prob_sums)

    @property
    def expected_accuracy(self) -> np.ndarray:
        """C_m = sum_r p(m, r) c(m, r) over r = 1..R, shape [10]; NaN for empty bins."""
        return np.sum(self.p * self.c, axis=1)

    @property
    def accuracy(self) -> np.ndarray:
        """Greedy accuracy per bin, c(m, 1); NaN for empty bins."""
        return self.c[:, 0]

    @property
    def mean_p_max(self) -> np.ndarray:
        """Mean top-1 probability per bin; NaN for empty bins."""
        return self._per_bin(self.p_max_sums)

    # ---- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        def listed(a: np.ndarray) -> list:
            return (
                [None if isinstance(x, float) and math.isnan(x) else x for x in a.tolist()]
                if a.ndim == 1
                else [listed(row) for row in a]
            )

        return {
            "schema": GRID_SCHEMA,
            "distribution": DISTRIBUTION,
            "bins": {"n_bins": N_BINS, "edges": BIN_EDGES, "rule": BIN_RULE},
            "max_rank": self.max_rank,
            "ranks": "1-based; column r-1 holds rank r (1 = argmax)",
            "n_tokens": self.n_tokens,
            "counts": self.counts.tolist(),
            "hits": self.hits.tolist(),
            "beyond": self.beyond.tolist(),
            "prob_sums": self.prob_sums.tolist(),
            "p_max_sums": self.p_max_sums.tolist(),
            "source": self.source,
            # Derived (recomputed from the counts on load; null = empty bin):
            "c": listed(self.c),
            "p": listed(self.p),
            "expected_accuracy": listed(self.expected_accuracy),
            "mean_p_max": listed(self.mean_p_max),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "grid") -> "CalibrationGrid":
        """A grid from its ``to_dict`` form; ValueError naming ``where`` and the field for any
        field of the wrong type or shape (counts must be JSON ints, sums finite numbers)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != GRID_SCHEMA:
            raise ValueError(f"{where}: schema must be {GRID_SCHEMA!r}, got {data.get('schema')!r}")
        check_bins(data.get("bins"), where)
        missing = [k for k in ("max_rank", "counts", "hits", "beyond", "prob_sums", "p_max_sums") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        R = data["max_rank"]
        if not is_int(R) or R < 1:
            raise bad_field(where, "max_rank", R, "an int >= 1")
        shapes = {
            "counts": (N_BINS,),
            "hits": (N_BINS, R),
            "beyond": (N_BINS,),
            "prob_sums": (N_BINS, R),
            "p_max_sums": (N_BINS,),
        }
        arrays = {
            name: _json_array(data[name], shape, name in ("counts", "hits", "beyond"), where, name)
            for name, shape in shapes.items()
        }
        try:
            grid = cls(max_rank=R, source=_check_source(data.get("source"), where), **arrays)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if not np.array_equal(grid.hits.sum(axis=1) + grid.beyond, grid.counts):
            raise ValueError(f"{where}: hits + beyond do not add up to counts in every bin")
        return grid

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationGrid":
        return cls.from_dict(read_json(path), where=str(path))


def check_bins(bins: Any, where: str) -> None:
    """A stored ``bins`` field: absent/null, or an object whose ``edges`` (if any) are the decoders'."""
    if bins is None:
        return
    if not isinstance(bins, Mapping):
        raise bad_field(where, "bins", bins, f"an object with 'edges' {BIN_EDGES}")
    edges = bins.get("edges")
    if edges is None:
        return
    if not (isinstance(edges, list) and all(is_number(e) for e in edges)):
        raise bad_field(where, "bins.edges", edges, f"a list of numbers {BIN_EDGES}")
    if [round(float(e), 6) for e in edges] != BIN_EDGES:
        raise ValueError(f"{where}: bin edges {edges} differ from the decoders' {BIN_EDGES}")


def _json_array(value: Any, shape: tuple[int, ...], integer: bool, where: str, name: str) -> np.ndarray:
    """A nested JSON list of the given shape: ints >= 0 (``integer``) or finite numbers >= 0."""
    allowed = f"a {'x'.join(map(str, shape))} nested list of " + ("ints >= 0" if integer else "finite numbers >= 0")
    try:
        obj = np.asarray(value, dtype=object)
    except (TypeError, ValueError):
        raise bad_field(where, name, value, allowed) from None
    if obj.shape != shape:
        raise bad_field(where, name, value, allowed)
    ok = is_int if integer else is_number
    if not all(ok(x) for x in obj.flat):
        raise bad_field(where, name, value, allowed)
    try:
        arr = np.asarray(obj.tolist(), dtype=np.int64 if integer else np.float64)
    except (OverflowError, ValueError):
        raise bad_field(where, name, value, allowed) from None
    if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
        raise bad_field(where, name, value, allowed)
    return arr


def _check_source(source: Any, where: str) -> dict:
    """The ``source`` object: ``n_records`` an int >= 0, ``traces``/``models``/``backends`` lists of strings."""
    if source is None:
        return {}
    if not isinstance(source, Mapping):
        raise bad_field(where, "source", source, "an object")
    n = source.get("n_records", 0)
    if not is_int(n) or n < 0:
        raise bad_field(where, "source.n_records", n, "an int >= 0")
    for key in ("traces", "models", "backends"):
        value = source.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise bad_field(where, f"source.{key}", value, "a list of strings")
    return dict(source)


def grid_from_traces(
    paths: Iterable[str | Path], max_rank: int = DEFAULT_MAX_RANK, on_error: str = "raise"
) -> CalibrationGrid:
    """Stream teacher-forced trace files (JSONL, ``sample_smart.teacher_forced/1``) into a grid.

    Records are read one at a time with ``sample_smart.traces.iter_teacher_forced``; a
    corrupt line raises (``on_error="raise"``) or is skipped with a warning (``"skip"``).

    Every position must count once, so the same file given twice (also through a symlink
    or a hard link) and the same example scored twice (a record with the same ``id``,
    ``model`` and gold tokens ``gold_id`` as an earlier one, in the same or another file,
    e.g. a copied trace file) are refused with a ValueError naming the ids and where they
    were first seen. Records that share only an id (two data files numbered 0, 1, ...) or
    one example scored by two models are different measurements and all count.
    """
    from sample_smart.traces.reader import iter_teacher_forced

    paths = [Path(p) for p in paths]
    distinct_inputs(paths)
    grid = CalibrationGrid(max_rank=max_rank)
    first_seen: dict[tuple[str, str, int], str] = {}
    duplicates: list[str] = []
    for path in paths:
        before = grid.n_tokens
        for record in iter_teacher_forced(path, on_error=on_error):
            key = (str(record.get("model")), str(record.get("id")), hash(tuple(record["gold_id"])))
            if key in first_seen:
                duplicates.append(f"{key[1]!r} (model {key[0]!r}) in {path}, first in {first_seen[key]}")
                continue
            first_seen[key] = str(path)
            try:
                grid.update_record(record)
            except ValueError as exc:
                raise ValueError(f"{path}: record {record.get('id', '?')!r}: {exc}") from exc
        grid.source["traces"].append(str(path))
        if grid.n_tokens == before and not duplicates:
            raise ValueError(f"{path}: no teacher-forced positions found (empty trace file?)")
    if duplicates:
        shown = "; ".join(duplicates[:5]) + (f"; and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        raise ValueError(
            f"{len(duplicates)} record(s) repeat an example already read (same id, model and gold "
            f"tokens), whose tokens would count twice: {shown}. Remove the duplicates"
        )
    return grid
