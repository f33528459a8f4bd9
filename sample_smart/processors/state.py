"""Per-row parameters of a batch, prepared once into tensors.

An engine builds a :class:`BatchState` when requests join, leave or move, and reuses it at
every decode step: :func:`~sample_smart.processors.pipeline.process_core` then reads only
tensors, and the *code path* (which rules run) is fixed by host-side values (``rules``,
``candidates``, the temperature flags), so no step ever reads a device value back to the host.

The per-row tensors are derived from the rule table (:data:`~sample_smart.processors.rules.RULES`):
every rule's parameters are present for every row, and a row that does not use a rule holds the
rule's neutral value (a no-op threshold).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, NamedTuple, Sequence

import torch

from sample_smart.config import DecodeConfig
from sample_smart.processors.rules import RULES, RULES_BY_NAME, Rule

__all__ = ["BatchState"]


class _RowsOf(Mapping):
    """The rows ``index`` of a mapping of row tensors, each gathered when first read (eager use
    only: a compiled program is never handed a selected state)."""

    def __init__(self, source: Mapping[str, torch.Tensor], index: torch.Tensor) -> None:
        self._source, self._index, self._gathered = source, index, {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._gathered:
            self._gathered[name] = self._source[name].index_select(0, self._index)
        return self._gathered[name]

    def __iter__(self):
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


@dataclass(frozen=True, eq=False)
class BatchState:
    """Row parameters as device tensors plus host values saying which rules any row uses.

    - ``rules``: the names of the rules some row uses, in table order (host; fixes the code path);
    - ``candidates``: how many of each row's largest logits those rules need (0: none);
    - ``any_temperature``, ``any_edt`` (host) and the ``[B]`` tensors ``temperature`` (1.0 when
      unset), ``edt`` (bool), ``edt_log_n``, ``edt_theta``, ``edt_log_t0`` (EDT in log form);
    - ``params``: every rule's per-row tensors by name (``[B]`` or ``[B, width]``; see ``rules``);
    - ``row_candidates`` (host): how many largest logits each row's own rules need;
    - ``row_rules`` (host): the names of the rules each row uses (a selected state's ``rules``);
    - ``row_configs`` (host, a state from :meth:`from_configs` and :meth:`rearranged` only): each
      row's config, by which :meth:`rearranged` finds the rows of a later batch.
    """

    batch_size: int
    device: torch.device
    rules: tuple[str, ...]
    candidates: int
    any_temperature: bool
    any_edt: bool
    temperature: torch.Tensor
    edt: torch.Tensor
    edt_log_n: torch.Tensor
    edt_theta: torch.Tensor
    edt_log_t0: torch.Tensor
    params: Mapping[str, torch.Tensor]
    row_candidates: tuple[int, ...] = ()  # host: each row's own need of largest logits (0: none)
    row_rules: tuple[frozenset[str], ...] = ()  # host: the rules each row uses
    # host, from_configs only: each row's config and its record (see rearranged)
    row_configs: tuple[DecodeConfig, ...] = field(default=(), compare=False, repr=False)
    _records: tuple = field(default=(), compare=False, repr=False)
    _vocab_size: int | None = field(default=None, compare=False, repr=False)
    # derived states, see derived(); not an init field, so every new state (also one made by
    # dataclasses.replace) starts without the cache of the state it was made from
    _views: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def is_noop(self) -> bool:
        """No row changes anything: ``process_core`` returns the logits as they are."""
        return not (self.rules or self.any_temperature or self.any_edt)

    @property
    def active_rules(self) -> tuple[Rule, ...]:
        return tuple(RULES_BY_NAME[name] for name in self.rules)

    @property
    def needs(self) -> frozenset[str]:
        """The statistics the active rules read (see ``rules.Stats``)."""
        return frozenset().union(*(r.needs for r in self.active_rules))

    def uses(self, rule: str) -> bool:
        return rule in self.rules

    @property
    def key(self) -> tuple:
        """The host values that fix the program: which rules, how many candidates, which transforms."""
        return (self.rules, self.candidates, self.any_temperature, self.any_edt)

    def tensors(self) -> list[torch.Tensor]:
        """Every row tensor (all have the batch as dim 0)."""
        return [getattr(self, name) for name in _ROW_FIELDS] + list(self.params.values())

    def has_layout(self, device: torch.device) -> bool:
        """Whether every row tensor is what :meth:`from_configs` builds: on ``device``, contiguous,
        ``[batch_size]`` (or ``[batch_size, width]``) of its dtype (:data:`ROW_DTYPES`, the rules'
        :class:`~sample_smart.processors.rules.Param`), and the parameters are exactly the rules'.
        Every state this module makes has it; a hand-built one may not (the compiled programs,
        which run without dynamo's guards, check it once per state)."""
        if set(self.params) != set(_PARAMS_BY_NAME):
            return False
        expected = [(ROW_DTYPES[name], 0) for name in _ROW_FIELDS]
        expected += [(_PARAMS_BY_NAME[name].dtype, _PARAMS_BY_NAME[name].width) for name in self.params]
        return all(
            isinstance(t, torch.Tensor)
            and t.dtype == dtype
            and t.device == device
            and tuple(t.shape) == ((self.batch_size, width) if width else (self.batch_size,))
            and t.is_contiguous()
            for t, (dtype, width) in zip(self.tensors(), expected)
        )

    def rows(self, start: int, stop: int) -> "BatchState":
        """The state of rows ``start:stop`` (tensor views, same host values, so the same code path);
        cached, since an engine reuses one state for many steps."""
        if start == 0 and stop == self.batch_size:
            return self
        return self.derived(
            ("rows", start, stop),
            lambda s: s._map_rows(lambda t: t[start:stop], stop - start, lambda host: host[start:stop]),
        )

    def select(self, rows: Sequence[int], index: torch.Tensor | None = None) -> "BatchState":
        """The state of the rows at these indices: ``rules`` and ``candidates`` become those of
        these rows (the transform flags stay the batch's). ``index``: the same rows as an int64 tensor on the
        state's device, if the caller has it. The transform tensors are gathered at once, each
        rule's parameters when first read (:class:`_RowsOf`): an eager step on a few rows reads
        those of the rules it applies only, so a batch that changes every step (continuous
        batching) does not gather twenty tensors for them."""
        if index is None:
            index = torch.tensor(list(rows), dtype=torch.int64).to(self.device, non_blocking=True)
        need = tuple(self.row_candidates[i] for i in rows) if self.row_candidates else ()
        own = tuple(self.row_rules[i] for i in rows) if self.row_rules else ()
        rules = tuple(name for name in self.rules if any(name in r for r in own)) if own else self.rules
        gathered = {name: getattr(self, name).index_select(0, index) for name in _ROW_FIELDS}
        return replace(
            self,
            batch_size=len(rows),
            rules=rules,
            params=_RowsOf(self.params, index),
            row_candidates=need,
            row_rules=own,
            candidates=max(need, default=self.candidates),
            **_ROWS_UNKNOWN,
            **gathered,
        )

    def tiled(self, n: int) -> "BatchState":
        """The state of a batch that repeats this one ``n`` times (row tensors copied)."""
        return self._map_rows(
            lambda t: t.repeat((n,) + (1,) * (t.dim() - 1)), n * self.batch_size, lambda host: host * n
        )

    def with_host(self, **host_values) -> "BatchState":
        """The same row tensors with other host values (``rules``, ``candidates``, ``any_*``)."""
        return replace(self, **_ROWS_UNKNOWN, **host_values)

    def derived(self, key, build) -> "BatchState":
        """``build(self)``, made once per key and kept with this state (an engine reuses one state
        for many steps, so its row views and program views are built once)."""
        if key not in self._views:  # also a view that is None is built once
            self._views[key] = build(self)
        return self._views[key]

    def _map_rows(self, fn, batch_size: int, host_fn) -> "BatchState":
        """``fn`` on every row tensor, ``host_fn`` on every per-row host tuple (the same rows)."""
        tensors = {name: fn(getattr(self, name)) for name in _ROW_FIELDS}
        params = {name: fn(t) for name, t in self.params.items()}
        host = {name: host_fn(getattr(self, name)) for name in ("row_candidates", "row_rules")}
        return replace(self, batch_size=batch_size, params=params, **_ROWS_UNKNOWN, **host, **tensors)

    @classmethod
    def from_configs(
        cls, configs: Sequence[DecodeConfig], device: torch.device | str = "cpu", vocab_size: int | None = None
    ) -> "BatchState":
        """Build the row tensors for ``configs`` (one per row) on ``device``.

        Built on the host from Python values and copied once (``non_blocking`` where the
        device allows): cost is O(B), independent of the vocabulary. With ``vocab_size`` known,
        a ``top_k`` of at least the vocabulary is off and ``dynamic_top_k`` entries are capped at
        it (the same kept sets), so a huge k never makes the batch select the whole vocabulary.
        """
        device = torch.device(device)
        rows = list(configs)
        for i, c in enumerate(rows):
            if not isinstance(c, DecodeConfig):
                raise TypeError(f"configs[{i}] is a {type(c).__name__}, expected DecodeConfig")
        per_row = [_row_values(c, vocab_size) for c in rows]
        b = len(rows)
        temperature, edt, edt_log_n, edt_theta, edt_log_t0 = (
            list(col) for col in (list(zip(*(r.transforms for r in per_row))) or [()] * 5)
        )
        params: dict[str, torch.Tensor] = {}
        for param, column in zip(_COLUMNS, list(zip(*(r.columns for r in per_row))) or [()] * len(_COLUMNS)):
            t = _on_device(list(column), param.dtype, device)
            params[param.name] = t.reshape(b, param.width) if param.width else t
        transforms = dict(zip(_ROW_FIELDS, (temperature, edt, edt_log_n, edt_theta, edt_log_t0)))
        return cls(
            batch_size=b,
            device=device,
            **{name: _on_device(column, ROW_DTYPES[name], device) for name, column in transforms.items()},
            params=params,
            row_configs=tuple(rows),
            _vocab_size=vocab_size,
            **_host_values(per_row),
        )

    def rearranged(self, configs: Sequence[DecodeConfig], vocab_size: int | None = None) -> "BatchState | None":
        """The state :meth:`from_configs` would build for ``configs`` (same vocabulary), when every
        one of them is (the same object as) the config of one of this state's rows: requests left or
        moved, none joined, as at most steps of continuous batching. Those rows are gathered, one
        ``index_select`` per tensor, instead of rebuilt from the configs. None when a config is new
        (or this state was not built by :meth:`from_configs`): the caller builds it."""
        if not configs or not self._records or vocab_size != self._vocab_size:
            return None
        where = {id(c): i for i, c in enumerate(self.row_configs)}
        rows = [where.get(id(c)) for c in configs]
        if None in rows:
            return None
        index = _on_device(rows, torch.int64, self.device)
        records = [self._records[i] for i in rows]
        return replace(
            self._map_rows(lambda t: t.index_select(0, index), len(rows), lambda host: host),
            row_configs=tuple(self.row_configs[i] for i in rows),
            **_host_values(records),
        )


def _on_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a tensor on ``device``, copied once (pinned and ``non_blocking`` on CUDA)."""
    t = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _host_values(records: Sequence["_Row"]) -> dict:
    """The host values of a state of rows with these records: the rules some row uses (table
    order), the largest row's need of candidates, the transform flags, the per-row tuples."""
    used = frozenset().union(*(r.rules for r in records))
    row_candidates = tuple(r.candidates for r in records)
    return {
        "rules": tuple(rule.name for rule in RULES if rule.name in used),
        "candidates": max(row_candidates, default=0),
        "any_temperature": any(r.transforms[0] != 1.0 for r in records),
        "any_edt": any(r.transforms[1] for r in records),
        "row_candidates": row_candidates,
        "row_rules": tuple(r.rules for r in records),
        "_records": tuple(records),
    }


# a derived state (other rows, other host values) does not know its rows' configs: rearranged() would misread them
_ROWS_UNKNOWN = {"row_configs": (), "_records": ()}

# the per-row transform tensors of a state (besides the rules' parameters)
_ROW_FIELDS = tuple(f.name for f in fields(BatchState) if f.type == "torch.Tensor")
# their dtypes (the rules' parameters have theirs in rules.Param)
ROW_DTYPES = {name: torch.bool if name == "edt" else torch.float32 for name in _ROW_FIELDS}


class _Row(NamedTuple):
    """One config's host values, as :meth:`BatchState.from_configs` lays them out."""

    transforms: tuple  # (temperature, edt, log N, theta, log T0)
    columns: tuple  # one value per rule parameter (_COLUMNS order): the rule's, or the neutral one
    rules: frozenset[str]  # the rules the row uses
    candidates: int  # how many largest logits its rules need (0: none), at most the vocabulary


# every rule's parameters in table order: the params of a state, one column each
_COLUMNS = tuple(param for rule in RULES for param in rule.params)
_PARAMS_BY_NAME = {param.name: param for param in _COLUMNS}


def _row_values(config: DecodeConfig, vocab_size: int | None) -> _Row:
    """One row's host values, computed once per distinct config (an engine rebuilds its state
    whenever a request joins or leaves, from mostly the same configs)."""
    try:
        return _cached_row_values(config, vocab_size)
    except TypeError:  # a config holding an unhashable value: computed each time
        return _cached_row_values.__wrapped__(config, vocab_size)


@functools.lru_cache(maxsize=4096)
def _cached_row_values(config: DecodeConfig, vocab_size: int | None) -> _Row:
    n, theta, t0 = config.edt_var if config.edt_var is not None else (1.0, 0.0, 1.0)
    temperature = config.temperature if (config.temperature and config.edt_var is None) else 1.0
    transforms = (temperature, config.edt_var is not None, math.log(n), theta, math.log(t0))
    columns: list = []
    used: list[str] = []
    need = 0
    for rule in RULES:
        values = rule.row(config, vocab_size)
        if values is not None:
            used.append(rule.name)
            if rule.candidates is not None:
                need = max(need, rule.candidates([values]))
        for j, param in enumerate(rule.params):
            neutral = [param.neutral] * param.width if param.width else param.neutral
            columns.append(neutral if values is None else values[j])
    if vocab_size is not None:
        need = min(need, vocab_size)
    return _Row(transforms, tuple(columns), frozenset(used), need)
