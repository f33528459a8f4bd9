"""A handful of fixed programs that cover every knob combination, compiled once at start-up.

The compiled backend of :mod:`~sample_smart.processors.compiled` builds one program per set of
active rules (up to 2^12 of them), each compiled when a batch first brings that set: a server whose
requests choose their settings stalls every request for seconds whenever a new combination
arrives. A *plan* instead runs **every** rule on every row: a row that does not use a rule holds
the rule's neutral parameter (:attr:`~sample_smart.processors.rules.Param.neutral`), whose
threshold is ``-inf`` (or ``<= m``): a no-op. Temperature is always applied (``T = 1`` leaves a row
bit for bit). Only what is expensive *and* data-dependent is switched:

- ``edt``: entropy-dependent temperature needs the untempered row's entropy, one more pass: over
  the whole batch, or (on CPU, a batch whose EDT rows are at most half of it) over those rows
  alone (:func:`edt_rows`, a program of its own before the threshold program of ``edt="none"``);
- ``top_p``: a batch with a top-p row takes a threshold program that also returns the tempered
  rows and their ``exp(x - m)`` (two writes), which top-p's search reads instead of computing them
  again;
- the candidates: the threshold program also returns the rows' chunk maxima; a batch whose rules
  read the largest logits (top-k, dynamic top-k, top-p) selects them from those maxima after the
  program, on the rows that read them only, each row as many as its own rules need, in one call
  (on CPU a float32 batch in the native selection, :mod:`~sample_smart.processors.native_select`;
  else two small ``topk``, aten calls), and the program :func:`candidates` applies those rules
  (every one on every such row: neutral parameters are no-ops), so one program serves every
  number of candidates;
- top-n-sigma's std (one more pass, in float64, on the rows that use it): part of the write
  program of a batch where some row asks for it (:func:`sigma`);
- top-p's search for rows whose nucleus is larger than its candidates: a program of its own
  (:func:`search`). So no program holds a ``torch.cond``, and every program is cacheable on disk
  by inductor. The exact bisection that finishes adversarial rows (never seen on language-model
  rows) runs eager. On CPU float32 rows neither runs: those rows take the native radix select
  (:mod:`~sample_smart.processors.native_top_p`), exact for every row, which reads them from the
  raw logits (and, after :func:`finish`, writes them), so the search program is not compiled there.

Which of these a batch needs is host data of its :class:`BatchState` (the rules it uses, how many
candidates each row reads), so choosing never reads the device. On CPU, where reading a tensor
waits for nothing, the search runs only on the rows whose nucleus exceeds the candidates and the
EDT and sigma passes only on the rows that use them; on a device they run on the whole batch and
``where`` selects (no host sync). A call is: :func:`thresholds` (temperature, the one exp pass,
every rule that needs nothing else, combined: one ``tau`` per row), :func:`candidates`,
:func:`search` (each only when needed), :func:`write` (top-n-sigma's rows when needed, then
``x >= tau`` kept, the rest ``-inf``; in place or not). On CPU a batch with candidates and at
most half of its rows on top-p takes :func:`finish` instead: candidates, sigma and write in one
program, which leaves the rows that need the search as they are; when there are any (reading
``need`` waits for nothing), they are searched and written after it. The temperature is
recomputed in each program with the same float operations, so the tempered row is stored only
for the search.

So four threshold programs (EDT none/all x top-p off/on), one EDT-rows program (CPU only), one
candidates, one search, two write programs (with and without top-n-sigma) and two finish
programs (CPU only) per (vocabulary, dtype, device, in place, grad mode) exist; on CPU float32
with the native top-p kernel (:func:`_plan_for`) no top-p plan, candidates or search program:
two threshold programs, the EDT-rows one, two finish and two write programs,
all compiled by :func:`prepare` before the
first request, which then checks with dynamo's guards that batches of other sizes take them
without a new graph; after that :func:`run` never compiles (a call whose signature was not
prepared runs the eager chain) and calls the programs without evaluating dynamo's guards: what
they would check is fixed by the signature and the state's layout, checked once per state
(:func:`run`); a region holding its one graph is called through that graph's bytecode, without
``torch.compile``'s wrapper, when the call's sizes are ones it was prepared for
(:mod:`~sample_smart.processors.direct_calls`). A batch of one row (also a one-row subset) is
run as two identical rows (dynamo would specialise size 1 into another compile). The kept sets
equal the eager chain's (tests/processors/test_plans.py). On CPU the programs' ``exp`` is ATen's
fast vectorised one (:mod:`~sample_smart.processors.fast_exp`: the threshold program is bound by
its exp passes), and for float32 logits the threshold program's chunk maxima and exp pass (a
program that keeps no ``exp`` for top-p's search) are one C++ loop per row that reads the row
once, an operator the program calls
(:mod:`~sample_smart.processors.native_stats`; inductor compiles them as two loops over the batch)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from typing import Callable, Mapping, NamedTuple

import torch

from sample_smart.processors import chain, direct_calls, fast_exp, native, native_stats, native_top_p, opt_level, top_p
from sample_smart.processors.rules import RULES, RULES_BY_NAME, Stats
from sample_smart.processors.select import chunk_maxima, largest_values, uses_chunks
from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import RowStats, finite_std, row_stats
from sample_smart.processors.temperature import edt_temperature

__all__ = ["CANDIDATES", "Plan", "prepare", "prepared", "reset", "run"]

CANDIDATES = top_p.CANDIDATES  # largest logits selected per row inside the programs
ALL_RULES = tuple(r.name for r in RULES)
# where each rule's threshold is computed: the threshold program (the statistics of one exp pass),
# the candidates program (from the selected largest logits), or the write program's top-n-sigma
# stage (its std is one more pass, paid only by batches that ask for it)
SIGMA_RULE = RULES_BY_NAME["top_n_sigma"]
VALUE_RULES = tuple(r for r in RULES if "values" in r.needs)
VALUE_PARAMS = tuple(p for r in VALUE_RULES for p in r.params)
IN_PROGRAM = tuple(r for r in RULES if r not in VALUE_RULES and r is not SIGMA_RULE)
logger = logging.getLogger(__name__)


class Plan(NamedTuple):
    """Which fixed programs a batch takes: ``edt`` ``"none"`` (no EDT row), ``"rows"`` (the EDT
    rows' temperatures from their own entropy pass, on those rows alone, in :func:`edt_rows`; then
    the threshold program of ``"none"``) or ``"all"`` (one more pass over the whole batch, inside
    the threshold program), and whether some row uses top-p
    (the program then also returns the tempered rows and their ``exp(x - m)`` for the search: its
    passes read them instead of computing them again)."""

    edt: str
    top_p: bool

    @classmethod
    def of(cls, state: BatchState) -> "Plan":
        """On a device: EDT on every row when some row uses it, top-p when some row does. On CPU a
        batch whose EDT rows (top-p rows) are at most half of it computes those rows' temperatures
        (tempered rows) on those rows alone (``edt="rows"``; eagerly in :func:`_top_p_search`),
        which costs less than the extra pass (the two extra writes) over the whole batch. A CPU
        float32 call never takes a top-p plan where the native top-p kernel serves
        (:func:`_plan_for`)."""

        def build(s: BatchState) -> "Plan":
            if not s.any_edt or _no_row_uses(s, "edt"):
                edt = "none"
            else:
                edt = "all" if _few_rows(s, "edt") is None else "rows"
            return cls(edt, s.uses("top_p") and _few_rows(s, "top_p") is None)

        return state.derived("plan_of", build)


class Signature(NamedTuple):
    """What a compiled program is specialised on besides its plan. ``inference``: the calls come
    inside ``torch.inference_mode`` with inference tensors (an engine such as vLLM), else under
    ``no_grad`` with ordinary tensors; dynamo guards on both, so each is prepared apart."""

    vocab: int
    dtype: torch.dtype
    device: str  # with its index ("cuda:0"): a program is compiled for one device
    inplace: bool
    inference: bool


# ------------------------------------------------------------------ the three programs
def _tempered(x: torch.Tensor, temperature: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(x - shift) * (1 / T)`` per row: the same float operations in every program and eager step
    (a row without EDT has ``shift = 0``, and ``x - 0`` is ``x`` bit for bit; ``T = 1`` leaves it
    too). A multiply, not ``/ T``: on CPU a vector division costs as much as the fast exp, and
    the two differ by at most one rounding (monotone in ``x`` either way, so no order changes)."""
    return (x - shift.unsqueeze(-1)) * temperature.reciprocal().unsqueeze(-1)


def thresholds(
    logits: torch.Tensor, state: BatchState, plan: Plan, temperature: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Every threshold that needs no candidates and no std, combined:
    ``(tau, temperature, shift, m, s, p_max, cmax, rows)``, ``rows = (x, exp(x - m))`` for a
    ``plan.top_p`` (else None). ``temperature``, ``shift`` [B]: the rows' own (a ``Plan.edt ==
    "rows"`` batch: with its EDT rows' from :func:`edt_rows`, and this program is the one of
    ``edt="none"``); for ``plan.edt == "all"`` the EDT rows' are computed here, on every row.

    ``tau`` [B] keeps ``x >= tau`` of the tempered row ``x = (logits - shift) / temperature``;
    ``m``, ``s``: the tempered max and ``sum exp(x - m)``; ``cmax``: the chunk maxima of the raw
    row (or its max, ``[B, 1]``, for a vocabulary too small for chunks), from which the
    candidates are selected after the program (:func:`_candidate_inputs`)."""
    x = chain.in_work_dtype(logits)
    if _native_pass(x, plan):
        base, cmax, temperature, shift = _native_stats(x, state, plan, temperature, shift)
    else:
        cmax = chunk_maxima(x) if uses_chunks(x.shape[-1], 1) else x.amax(dim=-1, keepdim=True)
        m_raw = cmax.amax(dim=-1)
        if plan.edt == "all":
            raw = row_stats(x, need_z=False, need_entropy=True, m=m_raw)
            temperature, shift = _edt_all(state, raw.entropy, m_raw, temperature, shift)
        xt = _tempered(x, temperature, shift)  # read by reductions only, so never stored
        m = _tempered(m_raw.unsqueeze(-1), temperature, shift).squeeze(-1)
        base = row_stats(xt, need_z=True, need_entropy=True, m=m, keep_exp=plan.top_p)
    m = base.m
    p_max = (m - base.z).exp()
    stats = Stats(x, m, base.z, p_max, base.entropy, None, base.s, None, None)  # no rule here reads x
    tau = torch.full_like(m, float("-inf"))
    for rule in IN_PROGRAM:
        tau = torch.maximum(tau, rule.tau(stats, state.params))
    tau = torch.minimum(tau, m)  # the argmax always survives
    rows = (_tempered(x, temperature, shift), base.e) if plan.top_p else None
    return tau, temperature, shift, m, base.s, p_max, cmax, rows


def _native_pass(x: torch.Tensor, plan: Plan) -> bool:
    """Whether the threshold program takes its chunk maxima and exp pass from the C++ loop of
    :mod:`~sample_smart.processors.native_stats`: float32 CPU rows long enough for chunks, and a
    plan that keeps no ``exp`` (top-p's search reads it)."""
    return not plan.top_p and native_stats.applies(x) and uses_chunks(x.shape[-1], 1)


def _native_stats(x, state: BatchState, plan: Plan, temperature, shift) -> tuple:
    """``(stats, cmax, temperature, shift)`` of the tempered rows ``(x - shift) / temperature`` from
    :func:`~sample_smart.processors.native_stats.row_exp_sums`, one C++ pass per row. With EDT on
    every row that pass is over the untempered rows (their entropy gives the EDT temperatures), and
    a second one, of the exp terms alone (the max is known), gives the tempered rows' sums."""
    if plan.edt == "all":
        cmax, m_raw, entropy = _native_untempered(x)
        temperature, shift = _edt_all(state, entropy, m_raw, temperature, shift)
        sums = native_stats.row_exp_sums_at(x, temperature.reciprocal(), shift, m_raw)
    else:
        cmax, sums = native_stats.row_exp_sums(x, temperature.reciprocal(), shift)
    m = _tempered(sums[:, :1], temperature, shift).squeeze(-1)
    return _from_sums(m, sums), cmax, temperature, shift


def _native_untempered(x: torch.Tensor, rows: torch.Tensor | None = None) -> tuple:
    """``(cmax, m_raw, entropy)`` of the untempered rows of ``x`` (the rows ``rows`` of it, read in
    place; None: all) from one call of :func:`~sample_smart.processors.native_stats.row_exp_sums`
    (temperature 1, shift 0)."""
    ones = x.new_ones(x.shape[0] if rows is None else rows.shape[0])
    cmax, sums = native_stats.row_exp_sums(x, ones, torch.zeros_like(ones), rows)
    m_raw = sums[:, 0]
    return cmax, m_raw, _from_sums(m_raw, sums).entropy


def _from_sums(m: torch.Tensor, sums: torch.Tensor) -> RowStats:
    """The statistics of rows with max ``m`` from their ``(M, S, T)`` sums
    (:func:`~sample_smart.processors.native_stats.row_exp_sums`): ``z = m + ln S``, ``H = ln S - T / S``."""
    log_s = sums[:, 1].log()
    return RowStats(m, m + log_s, log_s - sums[:, 2] / sums[:, 1], None, sums[:, 1])


def _edt_all(state: BatchState, entropy, m_raw, temperature, shift) -> tuple[torch.Tensor, torch.Tensor]:
    """``(temperature, shift)`` with every EDT row's temperature from its untempered ``entropy`` and
    its shift the row max ``m_raw`` (``Plan.edt == "all"``)."""
    edt = edt_temperature(entropy, state.edt_theta, state.edt_log_n, state.edt_log_t0)
    return torch.where(state.edt, edt, temperature), torch.where(state.edt, m_raw, shift)


def edt_rows(
    logits: torch.Tensor,
    index: torch.Tensor,
    edt: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    temperature: torch.Tensor,
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(temperature, shift)`` [B] with the EDT temperature and the row max (the shift) of the rows
    ``index`` (int64 [R], R >= 2; duplicates allowed): the untempered row's entropy is one exp pass
    over those R rows instead of the whole batch (the program a ``Plan.edt == "rows"`` batch runs
    before the threshold program of ``edt="none"``). ``edt``: ``(edt_theta, edt_log_n, edt_log_t0)``
    of the batch; the rows are read through ``index`` (no copy of them): by the C++ pass of
    :mod:`~sample_smart.processors.native_stats` for float32 CPU logits, else inside the program."""
    if native_stats.applies(logits):
        _, m_raw, entropy = _native_untempered(logits, index)
    else:
        x = chain.in_work_dtype(logits.index_select(0, index))
        m_raw = x.amax(dim=-1)
        entropy = row_stats(x, need_z=False, need_entropy=True, m=m_raw).entropy
    own = edt_temperature(entropy, *(t.index_select(0, index) for t in edt))
    return temperature.index_copy(0, index, own), shift.index_copy(0, index, m_raw)


def sigma(
    logits: torch.Tensor,
    index: torch.Tensor,
    params: dict,
    temperature: torch.Tensor,
    shift: torch.Tensor,
    m: torch.Tensor,
    tau: torch.Tensor,
) -> torch.Tensor:
    """``tau`` with top-n-sigma's threshold on the rows ``index`` (int64 [R], R >= 2; duplicates
    allowed): the std of the finite tempered logits is one more pass (float64 sums) over those rows,
    part of the write program of a batch where some row asks for it. The rows are read through
    ``index`` inside the program (the gather fuses into the pass: no copy of them)."""
    rows = [t.index_select(0, index) for t in (temperature, shift, m)]
    xt = _tempered(chain.in_work_dtype(logits.index_select(0, index)), rows[0], rows[1])
    stats = Stats(xt, rows[2], None, None, None, None, None, None, finite_std(xt, rows[2]))
    found = SIGMA_RULE.tau(stats, {k: v.index_select(0, index) for k, v in params.items()})
    return tau.index_copy(0, index, torch.maximum(tau.index_select(0, index), torch.minimum(found, rows[2])))


def search(
    rows: tuple[torch.Tensor, torch.Tensor],
    m: torch.Tensor,
    s: torch.Tensor,
    p: torch.Tensor,
    v_last: torch.Tensor,
    need: torch.Tensor,
    tau: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Top-p's bracket search on the rows ``need`` marks (see :mod:`~sample_smart.processors.top_p`):
    ``(tau, bad, lo, hi)``, ``bad`` the rows that still need the exact bisection."""
    xt, e = rows  # the tempered rows and exp(x - m), from the threshold program
    offsets = torch.tensor(top_p.PROBE_OFFSETS, device=xt.device)
    steps = torch.tensor(top_p.FINE_STEPS, device=xt.device, dtype=xt.dtype)  # descending
    found, exact, lo, hi = top_p._search(xt, m, e, s, p, v_last, offsets, steps)
    bad = need & ~exact  # their tau comes from the bisection, after this program
    rule_tau = torch.where(need & ~bad, found, torch.full_like(found, float("-inf")))
    return torch.maximum(tau, torch.minimum(rule_tau, m)), bad, lo, hi


def write(
    logits: torch.Tensor,
    tau: torch.Tensor,
    temperature: torch.Tensor,
    shift: torch.Tensor,
    inplace: bool,
    top_n_sigma: tuple | None = None,
    keep: torch.Tensor | None = None,
):
    """The kept set of every row: ``x = (logits - shift) / T`` where ``x >= tau``, else ``-inf``,
    in the input dtype (half precision: see :func:`~sample_smart.processors.chain.tempered_half_output`).
    ``top_n_sigma``: ``(index, params, m)`` of the rows that use it, whose ``tau`` first takes its
    threshold (:func:`sigma`, in the same program). ``keep`` (bool [B]): rows left as they are."""
    tau = _with_top_n_sigma(logits, tau, temperature, shift, top_n_sigma)
    dtype = logits.dtype
    xt = _tempered(chain.in_work_dtype(logits), temperature, shift)
    t = tau.unsqueeze(-1)
    if dtype not in chain.WORK_DTYPES:
        drop = xt < t.clamp(min=torch.finfo(xt.dtype).min)
        lift = torch.where(temperature != 1.0, xt.amax(dim=-1), 0.0).unsqueeze(-1)
        out = (xt - lift).clamp(min=torch.finfo(dtype).min).masked_fill(drop, float("-inf")).to(dtype)
    else:
        out = torch.where(xt >= t, xt, float("-inf"))
    if keep is not None:
        out = torch.where(keep.unsqueeze(-1), logits, out)
    if inplace:
        logits.copy_(out)
        return logits
    return out


def finish(logits, tau, temperature, shift, m, s, p_max, inplace: bool, cand: tuple, top_n_sigma: tuple | None):
    """:func:`candidates`, top-n-sigma's rows (:func:`sigma`) and :func:`write` in one program (CPU):
    ``(out, tau, need, v_last)``. The top-p rows whose nucleus is larger than their candidates
    (``need``) are left as they are (``keep``): the caller searches and writes them."""
    tau, need, v_last = candidates(tau, temperature, shift, m, s, p_max, cand)
    tau = _with_top_n_sigma(logits, tau, temperature, shift, top_n_sigma)
    return write(logits, tau, temperature, shift, inplace, keep=need), tau, need, v_last


def _with_top_n_sigma(logits, tau, temperature, shift, top_n_sigma: tuple | None) -> torch.Tensor:
    """``tau`` with top-n-sigma's threshold on its rows (:func:`sigma`; ``top_n_sigma``: their
    ``(index, params, m)``), or ``tau`` itself when no row uses it."""
    if top_n_sigma is None:
        return tau
    index, params, m = top_n_sigma
    return sigma(logits, index, params, temperature, shift, m, tau)


# ------------------------------------------------------------------ compiled regions
_lock = threading.Lock()
_regions: dict[tuple, Callable] = {}
_programs: dict[tuple, Callable] = {}  # the function each region compiles
_prepared: set[Signature] = set()
_warned: set[tuple] = set()
_fallbacks = [0]  # calls that a program would have had to recompile for (they ran eager)
# whether _call marks its inputs' dimensions (dynamic batch, static vocabulary): only while
# prepare() compiles; the marks steer tracing only, and after it nothing traces (run() calls under
# fail_on_recompile), so a serving step skips them (~50 us of Python per threshold call)
_marking = [False]
# what prepare() learns about each region (program and key) it compiled: the sizes its calls had,
# and, once the region holds one compiled graph, that graph's bytecode to call without
# torch.compile's wrapper (:mod:`~sample_smart.processors.direct_calls`)
_preparing = threading.local()
_shapes: dict[tuple, direct_calls.Shapes] = {}
_direct: dict[tuple, Callable] = {}


def _region(name: str, fn: Callable, key: tuple) -> Callable:
    """The compiled ``fn`` for ``key`` (``(vocabulary, dtype, device, inference mode, ...)``); on CPU with
    ATen's fast exp (:mod:`~sample_smart.processors.fast_exp`), as :func:`prepare` compiles it."""
    region = _regions.get((name,) + key)
    if region is None:
        options = fast_exp.options() if key[2] == "cpu" else None
        region = torch.compile(fn, fullgraph=True, dynamic=None, isolate_recompiles=True, options=options)
        _regions[(name,) + key] = region
        _programs[(name,) + key] = fn
    return region


def _call(name: str, fn: Callable, key: tuple, *args):
    """``fn(*args)`` through its compiled region; every batch-sized tensor argument (also inside a
    tuple, a dict or the state) has a dynamic batch dimension, so no batch size (but 1) compiles
    again, and static other dimensions: a process that prepares a second vocabulary gets programs
    specialised on it, not one generic (slower) program for both. The first argument holds a
    batch-sized tensor. After :func:`prepare`, a call whose arguments fit the sizes the region was
    prepared with runs its one graph's bytecode directly (:mod:`~sample_smart.processors.direct_calls`)."""
    full = (name,) + key
    if _marking[0]:
        _mark_shapes(args)
    if getattr(_preparing, "active", False):
        _shapes.setdefault(full, direct_calls.Shapes()).note(_tensors_in(args, states=False))
    else:
        direct = _direct.get(full)
        if direct is not None and _shapes[full].fit(_tensors_in(args, states=False)):
            return direct(*args)
    return _region(name, fn, key)(*args)


def _refresh_direct() -> None:
    """The direct bytecode of every region that holds exactly one graph and whose prepared calls
    agreed on their arguments' layout; a region that gained a second graph loses its entry."""
    global _direct
    found = {}
    for full, region in _regions.items():
        shapes = _shapes.get(full)
        if shapes is None or shapes.spec() is None:
            continue
        bytecode = direct_calls.bytecode_of(_programs[full], region)
        if bytecode is not None:
            found[full] = bytecode
    _direct = found  # one assignment: a call in another thread sees the old table or the new one


def _mark_shapes(args: tuple) -> None:
    first = args[0][0] if isinstance(args[0], tuple) else args[0]
    batch = first.shape[0]
    for t in _tensors_in(args):
        if t.dim() and t.shape[0] == batch:
            torch._dynamo.maybe_mark_dynamic(t, 0)
            for dim in range(1, t.dim()):  # the vocabulary: never made dynamic by a second one
                torch._dynamo.mark_static(t, dim)


def _tensors_in(value, states: bool = True) -> list[torch.Tensor]:
    """Every tensor in ``value``: a tensor, a state, or a tuple or dict of them (nested). With
    ``states=False`` a state's tensors are left out: those a direct call checks (:func:`_call`),
    since every tensor of a state has the logits' rows (checked by ``_fits`` and, once per state,
    ``BatchState.has_layout`` before any program runs). Runs on every program call, so the plain
    kinds the programs take are told apart by their type before any ``isinstance``."""
    kind = type(value)
    if kind is torch.Tensor:
        return [value]
    if kind is tuple or kind is list or kind is dict:
        return [t for item in (value.values() if kind is dict else value) for t in _tensors_in(item, states)]
    if value is None or kind is bool or kind is int or kind is float:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, BatchState):
        return value.tensors() if states else []
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    return [t for item in items for t in _tensors_in(item, states)]


def _universal(state: BatchState) -> BatchState:
    """The state with every rule active (neutral parameters where a row does not use one)."""
    return state.derived("plan", lambda s: s.with_host(rules=ALL_RULES, any_temperature=True))


def _run_compiled(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor:
    # a region per device (with its index) and grad mode: each holds one graph (see _call)
    sig = (logits.shape[-1], logits.dtype, str(logits.device), torch.is_inference_mode_enabled())
    plan = _plan_for(logits, state)
    temperature, shift = state.temperature, state.derived("no_shift", lambda s: torch.zeros_like(s.temperature))
    if plan.edt == "rows":  # the EDT rows' temperatures, then the threshold program of edt="none"
        edt_index = state.derived("edt_rows", lambda st: _two_rows_at_least(_few_rows(st, "edt")))
        if _marking[0]:
            torch._dynamo.maybe_mark_dynamic(edt_index, 0)  # its own size: a subset of the batch
        edt = (state.edt_theta, state.edt_log_n, state.edt_log_t0)
        temperature, shift = _call("edt_rows", edt_rows, sig, logits, edt_index, edt, temperature, shift)
        plan = Plan("none", plan.top_p)
    tau, temperature, shift, m, s, p_max, cmax, rows = _call(
        "thresholds", thresholds, sig + plan, logits, _universal(state), plan, temperature, shift
    )
    top_n_sigma = _top_n_sigma(state, m)
    key = sig + (inplace, top_n_sigma is not None)
    if not _reads_candidates(state):
        return _call("write", write, key, logits, tau, temperature, shift, inplace, top_n_sigma)
    cand = _candidate_inputs(logits, state, cmax)
    if logits.device.type != "cpu" or plan.top_p:
        # the search (on a device on every row: choosing would be a host sync; a CPU batch most of
        # whose rows use top-p may need it on most rows), then the write
        tau, need, v_last = _call("candidates", candidates, sig, tau, temperature, shift, m, s, p_max, cand)
        if state.uses("top_p") and (logits.device.type != "cpu" or bool(need.any())):
            tau = _top_p_search(sig, rows, (logits, temperature, shift), state, m, s, v_last, need, tau)
        return _call("write", write, key, logits, tau, temperature, shift, inplace, top_n_sigma)
    out, tau, need, v_last = _call(
        "finish", finish, key, logits, tau, temperature, shift, m, s, p_max, inplace, cand, top_n_sigma
    )
    if state.uses("top_p") and bool(need.any()):  # CPU: reading need waits for nothing
        out = _write_searched_rows(sig, out, rows, state, temperature, shift, m, s, v_last, need, tau)
    return out


def _plan_for(logits: torch.Tensor, state: BatchState) -> Plan:
    """:meth:`Plan.of` the state, but never a top-p plan where the native top-p kernel takes the
    rows the candidates do not settle (:func:`_native_top_p`: CPU float32): the threshold program
    then keeps no tempered rows for a search (two writes of the batch fewer) and takes the native
    exp pass, and :func:`finish` writes every other row."""
    plan = Plan.of(state)
    if plan.top_p and native_top_p.serves(logits.device, logits.dtype):  # contiguous: run() requires it
        return Plan(plan.edt, False)
    return plan


def _write_searched_rows(sig, out, rows, state, temperature, shift, m, s, v_last, need, tau) -> torch.Tensor:
    """After :func:`finish` (CPU): the top-p rows whose nucleus is larger than their candidates
    (``need``), which it left as they were, get their tau and are written: by the native kernel in
    place (float32), else from the search and the write's own code, eagerly."""
    index = need.nonzero().squeeze(1)
    if _native_top_p(out, index, state, temperature, shift, m, s, tau, write=True) is not None:
        return out  # the kernel wrote the rows
    tau = _top_p_search(sig, rows, (out, temperature, shift), state, m, s, v_last, need, tau)
    picked = [t.index_select(0, index) for t in (out, tau, temperature, shift)]
    return out.index_copy_(0, index, write(*picked, False))


def _native_top_p(logits, index, state, temperature, shift, m, s, tau, write: bool) -> torch.Tensor | None:
    """CPU float32: ``tau`` with the exact top-p threshold of the rows ``index`` (int64 [R]) from
    :func:`~sample_smart.processors.native_top_p.top_p_rows`, read from the raw ``logits`` in place
    (``write``: those rows written too, as :func:`write` writes them). None when the kernel does not
    apply (another dtype or device, no library): then nothing was written."""
    inv_t = temperature.reciprocal()  # _tempered's multiplier
    return native_top_p.settle(logits, index, inv_t, shift, m, s, state.params["top_p"], tau, write=write)


def _top_n_sigma(state: BatchState, m: torch.Tensor) -> tuple | None:
    """``(index, params, m)`` of the rows the write's top-n-sigma stage reads (:func:`_sigma_rows`),
    or None when no row uses it."""
    if not state.uses(SIGMA_RULE.name) or _no_row_uses(state, SIGMA_RULE.name):
        return None
    index = state.derived("sigma_rows", _sigma_rows)
    if _marking[0]:
        torch._dynamo.maybe_mark_dynamic(index, 0)  # its own size: a subset of the batch
    params = state.derived("sigma_params", lambda st: {p.name: st.params[p.name] for p in SIGMA_RULE.params})
    return index, params, m


def _sigma_rows(state: BatchState) -> torch.Tensor:
    """The rows the sigma program reads (:func:`_few_rows`, at least two), or every row."""
    index = _few_rows(state, SIGMA_RULE.name)
    if index is None:
        index = torch.arange(state.batch_size, device=state.device)
    return _two_rows_at_least(index)


def _two_rows_at_least(index: torch.Tensor) -> torch.Tensor:
    """The rows a program runs a subset on: a one-row subset as two identical rows (dynamo would
    specialise a batch of 1 into another compile; the caller keeps the first ``len(index)``)."""
    return index if index.numel() > 1 else index.repeat(2)


def _few_rows(state: BatchState, rule: str) -> torch.Tensor | None:
    """On CPU, the rows of ``state`` that use ``rule`` (``"edt"`` or a rule's name) when they are at
    most half of the batch (int64 [R], once per state: from its host values where it has them,
    else read from its CPU tensors); else, and on a device (reading would be a host sync), None:
    the whole batch runs that step."""

    def build(st: BatchState) -> torch.Tensor | None:
        if st.device.type != "cpu":
            return None
        rows = _rows_using(st, rule)
        if rows is not None:
            index = torch.tensor(rows, dtype=torch.int64)
        else:
            if rule == "edt":
                on = st.edt
            else:
                first = RULES_BY_NAME[rule].params[0]
                on = st.params[first.name] != first.neutral
            index = on.nonzero().squeeze(1)
        return index if 2 * index.numel() <= st.batch_size else None

    return state.derived(("few_rows", rule), build)


def _no_row_uses(state: BatchState, rule: str) -> bool:
    """Whether, on CPU, no row of ``state`` uses ``rule`` although its host values name it: a slice
    (``state.rows(a, b)``) keeps the batch's rules and flags. A program would then run that rule's
    pass on zero rows, a size dynamo specialises (the call would fall back to eager): it is skipped."""
    index = _few_rows(state, rule)
    return index is not None and index.numel() == 0


def _rows_using(state: BatchState, rule: str) -> list[int] | None:
    """The rows whose config uses ``rule`` (``"edt"`` or a rule's name), from the state's host
    values, or None when it does not have them (a hand-built or derived state). A row that names
    a rule at its neutral value (``top_p=1``) counts: the programs then run it on that row, a no-op."""
    if rule == "edt":
        records = state._records
        return [i for i, r in enumerate(records) if r.transforms[1]] if len(records) == state.batch_size else None
    if len(state.row_rules) != state.batch_size:
        return None
    return [i for i, own in enumerate(state.row_rules) if rule in own]


def _reads_candidates(state: BatchState) -> bool:
    """Whether some row reads the largest logits: the batch needs candidates and, where the state
    has per-row needs, one of its rows does (a slice, ``state.rows(a, b)``, keeps the batch's
    ``candidates`` but only its own rows' needs)."""
    return state.candidates > 0 and (not state.row_candidates or any(state.row_candidates))


def _candidate_inputs(logits: torch.Tensor, state: BatchState, cmax: torch.Tensor) -> tuple:
    """``(params, index, width, values, vocab)`` of :func:`candidates`: the largest logits of the
    rows whose rules read them (host data), each row as many as it needs, selected in one call from
    the threshold program's chunk maxima (:func:`~sample_smart.processors.select.largest_values`;
    on CPU the native selection)."""
    index, ks, width, k = state.derived("candidate_rows", _candidate_rows)
    values = largest_values(logits, k, cmax.index_select(0, index), index, ks)
    params = state.derived("value_params", lambda st: {p.name: st.params[p.name] for p in VALUE_PARAMS})
    if _marking[0]:
        _mark_shapes((state.temperature, params))
        for t in (index, width, values):
            torch._dynamo.maybe_mark_dynamic(t, 0)  # their own rows: a subset of the batch
        torch._dynamo.maybe_mark_dynamic(values, 1)  # and the largest need of those rows
    return params, index, width, values, logits.shape[-1]


def _candidate_rows(state: BatchState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(index, ks, width, k)``: the rows that read candidates (int64 [R], R >= 2: a single row
    twice), how many each reads (int64 [R], on the CPU for the selection, and ``width`` the same on
    the state's device for the program) and their largest need (at least 2: a dimension of 1 would
    be specialised by dynamo). From the state's host values; a state without them: every row, the
    batch's need."""
    if state.row_candidates:
        rows = [i for i, n in enumerate(state.row_candidates) if n > 0]
        need = [state.row_candidates[i] for i in rows]
    else:
        rows, need = list(range(state.batch_size)), [state.candidates] * state.batch_size
    if len(rows) == 1:
        rows, need = rows * 2, need * 2
    ks = torch.tensor(need, dtype=torch.int64)
    index = torch.tensor(rows, dtype=torch.int64).to(state.device, non_blocking=True)
    return index, ks, ks.to(state.device, non_blocking=True), max(2, *need)


def candidates(tau, temperature, shift, m, s, p_max, cand: tuple):
    """The rules that read the largest logits (top-k, dynamic top-k, top-p's first stage), each on
    every row of ``index`` (int64 [R], R >= 2; duplicates allowed) with those rows' parameters
    (``params``: the batch's; a rule a row does not use holds its neutral value, a no-op):
    ``values`` [R, K] are the rows' largest raw logits, descending, row r's first ``width[r]`` its
    own candidates (the rest is never read). ``(tau, need, v_last)`` [B]: ``tau`` with those
    thresholds, the top-p rows whose nucleus is larger than their candidates, their smallest
    candidate (False and ``m`` on the other rows). ``cand``: ``(params, index, width, values, vocab)``."""
    params, index, width, values, vocab = cand
    tau_r, temperature_r, shift_r, m_r, s_r, p_max_r = (
        t.index_select(0, index) for t in (tau, temperature, shift, m, s, p_max)
    )
    own = {name: t.index_select(0, index) for name, t in params.items()}
    xt = _tempered(values.to(temperature_r.dtype), temperature_r, shift_r)
    stats = Stats(None, m_r, None, p_max_r, None, None, s_r, xt, None)
    t = torch.full_like(m_r, float("-inf"))
    for rule in VALUE_RULES:
        if rule.name == "top_p":  # its first stage; the search runs after, for the rows in need
            rule_tau, need_r, v_last_r = top_p.candidate_tau(xt, m_r, s_r, own["top_p"], width, vocab)
        else:
            rule_tau = rule.tau(stats, own)
        t = torch.maximum(t, rule_tau)
    need = torch.zeros_like(m, dtype=torch.bool).index_copy(0, index, need_r)
    return tau.index_copy(0, index, torch.maximum(tau_r, torch.minimum(t, m_r))), need, m.index_copy(0, index, v_last_r)


def _top_p_search(sig, rows, raw, state, m, s, v_last, need, tau) -> torch.Tensor:
    """tau of the top-p rows ``need`` marks. CPU float32: the native kernel on those rows, read
    from the raw logits (:func:`_native_top_p`). Otherwise the search program on them, then the
    exact bisection (eager) of the adversarial rows it could not settle. On CPU (where reading
    ``need`` waits for nothing) only those rows go through the search when they are at most half
    the batch (in a mixed batch they are a few of its rows; copying most of a batch out would cost
    more than searching all of it).
    ``rows``: the tempered rows and their ``exp(x - m)`` from the threshold program, or None from a
    plan without top-p (a CPU batch whose top-p rows are at most half of it); then the searched
    rows are tempered here from ``raw = (logits, temperature, shift)`` as the program does."""
    index = need.nonzero().squeeze(1) if m.device.type == "cpu" else None
    if index is not None:
        found = _native_top_p(raw[0], index, state, raw[1], raw[2], m, s, tau, write=False)
        if found is not None:
            return found
    p = torch.where(state.params["top_p"] < 1.0, state.params["top_p"], 0.0)
    if index is not None and 2 * index.numel() <= need.shape[0]:
        pick = _two_rows_at_least(index)
        sub = [t.index_select(0, pick) for t in (m, s, p, v_last, need, tau)]
        found = _search_rows(sig, _searched_rows(rows, raw, pick, sub[0]), *sub)
        return tau.index_copy(0, index, found[: index.numel()])
    return _search_rows(sig, _searched_rows(rows, raw, None, m), m, s, p, v_last, need, tau)


def _searched_rows(rows, raw, pick, m) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, exp(x - m))`` of the rows ``pick`` (None: all): gathered from the program's ``rows``,
    or tempered and exponentiated from ``raw`` with the threshold program's float operations."""
    if rows is not None:
        return rows if pick is None else tuple(r.index_select(0, pick) for r in rows)
    logits, temperature, shift = raw if pick is None else (t.index_select(0, pick) for t in raw)
    xt = _tempered(chain.in_work_dtype(logits), temperature, shift)
    return xt, (xt - m.unsqueeze(-1)).exp()


def _search_rows(sig, rows, m, s, p, v_last, need, tau) -> torch.Tensor:
    tau, bad, lo, hi = _call("search", search, sig, rows, m, s, p, v_last, need, tau)
    if m.device.type != "cpu" or bool(bad.any()):  # adversarial rows: exact bisection, eager
        exact = top_p._bisect_rows(*rows, p * s, lo, hi, bad, tau)
        tau = torch.where(bad, torch.maximum(tau, torch.minimum(exact, m)), tau)
    return tau


def compiled_programs() -> int:
    """How many compiled graphs this process holds for the programs (dynamo's cache entries
    of their code): constant after :func:`prepare`, whatever requests bring."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    programs = (edt_rows, thresholds, candidates, search, write, finish)
    return sum(len(_debug_get_cache_entry_list(fn.__code__)) for fn in programs)


def prepared(logits: torch.Tensor, inplace: bool) -> bool:
    """Whether :func:`prepare` compiled the programs for this vocabulary, dtype, device, write and
    grad mode (see :class:`Signature`)."""
    sig = Signature(logits.shape[-1], logits.dtype, str(logits.device), inplace, torch.is_inference_mode_enabled())
    return sig in _prepared


def fallbacks() -> int:
    """How many prepared calls ran eager because a program would have recompiled (0 is the design)."""
    return _fallbacks[0]


def run(logits: torch.Tensor, state: BatchState, inplace: bool) -> torch.Tensor | None:
    """The batch through its plan's compiled programs, or None when they were not prepared for this
    signature, the inputs are not laid out as prepared (:func:`_fits`), no plan covers the batch,
    or a program would have to compile (the caller then runs the eager chain). Never compiles:
    the programs run under ``fail_on_recompile``.

    Without guard evaluation (``skip_guard_eval_unsafe``): each program has one compiled graph per
    plan, and what dynamo's guards would check on every call (dtypes, devices, shapes, strides, grad
    mode, the state's host values) is fixed by the signature, :func:`_fits` and the plan, so the
    guards could only pass; skipping them saves their evaluation on every program call."""
    if not _fits(logits, state, inplace):
        return None
    state = _in_grad_mode(_with_params_gathered(state))
    if not state.derived(("layout", logits.device), lambda s: s.has_layout(logits.device)):
        return None
    try:
        with _grad_context(), torch.compiler.set_stance("fail_on_recompile", skip_guard_eval_unsafe=True):
            if logits.shape[0] > 1:
                return _run_compiled(logits, state, inplace)
            # dynamo specialises size 1: run two identical rows (our own copy) instead
            pair = _run_compiled(torch.cat([logits, logits]), state.derived("pair", lambda s: s.tiled(2)), True)
    except RuntimeError as exc:
        if not refused_recompile(exc):
            raise
        _fallbacks[0] += 1
        key = ("recompile", Plan.of(state), tuple(logits.shape[1:]), logits.dtype)
        _warn_once(key, f"a program would recompile ({exc})")
        return None
    if inplace:
        return logits.copy_(pair[:1])
    return pair[:1].clone()


def refused_recompile(exc: BaseException) -> bool:
    """Whether ``exc`` is dynamo refusing to compile under :func:`run`'s stance: ``fail_on_recompile``
    with guards evaluated says so by name; without guard evaluation a call that misses the one graph
    (e.g. a 0/1-specialised size) says ``skip_guard_eval_unsafe``. Either way the batch runs eager."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("fail_on_recompile" in text or "skip_guard_eval_unsafe" in text)


def _fits(logits: torch.Tensor, state: BatchState, inplace: bool) -> bool:
    """Whether ``logits`` are what the programs were prepared for: a contiguous ``[B, V]`` tensor of
    a prepared signature, of the call's grad mode (an inference tensor inside
    ``torch.inference_mode``, an ordinary one that needs no grad outside it), with ``B`` the state's
    rows. (The state's own tensors are checked by :meth:`BatchState.has_layout`, once per state.)"""
    if logits.dim() != 2 or not logits.is_contiguous() or logits.requires_grad:
        return False
    if logits.is_inference() != torch.is_inference_mode_enabled() or logits.shape[0] != state.batch_size:
        return False
    return prepared(logits, inplace)


def _with_params_gathered(state: BatchState) -> BatchState:
    """``state`` with its parameters in a dict: a selected state (:meth:`BatchState.select`) gathers
    each when first read, which the programs (traced with a dict) do not take; gathered once."""
    if type(state.params) is dict:
        return state
    return state.derived("params_gathered", lambda s: dataclasses.replace(s, params=dict(s.params)))


def _in_grad_mode(state: BatchState) -> BatchState:
    """``state`` with row tensors of the call's kind: inference tensors inside
    ``torch.inference_mode``, ordinary ones outside it. Dynamo guards on the kind, so a state built
    in the other mode (e.g. once at set-up, then used inside ``inference_mode``) would miss every
    prepared program; its copy in this mode is made once and kept with the state."""
    inference = torch.is_inference_mode_enabled()
    if state.temperature.is_inference() == inference:
        return state
    return state.derived(("grad_mode", inference), lambda s: s._map_rows(torch.clone, s.batch_size, lambda host: host))


def _grad_context():
    """The programs never need autograd: they run under ``no_grad`` unless the caller is in
    ``inference_mode`` already (vLLM); dynamo guards on that mode, so it is part of the signature."""
    import contextlib

    return contextlib.nullcontext() if torch.is_inference_mode_enabled() else torch.no_grad()


def _warn_once(key: tuple, what: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning("sample_smart: %s; this batch runs the eager chain", str(what).splitlines()[0][:300])


def prepare(
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    inplace: bool = True,
    inference: bool = False,
) -> float:
    """Compile every plan for ``[*, vocab_size]`` logits of ``dtype`` on ``device``, written in place
    or not, for calls inside ``torch.inference_mode`` (``inference``: an engine; the vLLM processor
    writes in place in inference mode) or outside it. Returns the seconds it took (a later process
    mostly reads inductor's on-disk cache). Raises what the compiler raises (no C++ compiler, ...):
    the caller decides to fall back."""
    import time

    started = time.perf_counter()
    device = torch.device(device)
    if device.index is None:  # "cuda": the current one, named as its tensors name it ("cuda:0")
        device = torch.empty(0, device=device).device
    sig = Signature(int(vocab_size), dtype, str(device), bool(inplace), bool(inference))
    with _lock, torch.inference_mode() if sig.inference else torch.no_grad():
        if sig in _prepared:
            return 0.0
        probe = None
        if device.type == "cpu":
            probe = _probe_vector_isa()  # while the first program is traced
            native.load()  # the C++ selection and exp pass (else topk and inductor's pass, with a warning)
        _marking[0] = True
        _preparing.active = True
        try:
            with fast_exp.compiling(), opt_level.compiling():  # the fast exp, g++ -O2
                _compile_plans(sig, vocab_size, dtype, device)
        finally:
            _marking[0] = False
            _preparing.active = False
        _refresh_direct()
        _prepared.add(sig)
        if probe is not None:
            probe.join()
    return time.perf_counter() - started


def _probe_vector_isa() -> threading.Thread | None:
    """Inductor's check of the CPU's vector instruction sets (which it runs once per process, the
    first time it generates CPU code: a probe library loaded by a child Python per instruction set,
    ~1.3 s here), started in a thread; its result is cached, so the compile that needs it, ~2 s into
    :func:`prepare` (the first program's tracing comes first), finds it done. Nothing when this
    torch has no such function (the compile then runs its own check) or the check has run already."""
    try:
        from torch._inductor.cpu_vec_isa import valid_vec_isa_list
    except ImportError:
        return None
    info = getattr(valid_vec_isa_list, "cache_info", None)
    if info is None or info().currsize:
        return None

    def check() -> None:
        try:
            valid_vec_isa_list()
        except Exception:  # noqa: BLE001 - the compile runs the check again and raises in its thread
            return

    thread = threading.Thread(target=check, name="sample_smart-isa-probe", daemon=True)
    thread.start()
    return thread


def _compile_plans(sig: Signature, vocab_size: int, dtype: torch.dtype, device: torch.device) -> None:
    """Run every plan once on random rows of ``sig``: each program compiles (or loads from disk);
    then check, with dynamo's guards evaluated, that a batch of other sizes (rows, subsets, number
    of candidates) runs through them without a new graph (a program specialised on a size it was
    meant to take dynamically would fail here, not serve a call it does not fit, see :func:`run`)."""
    g = torch.Generator().manual_seed(0)
    for edt, uses_top_p, sigma in _prepare_cases(device, dtype):
        cfgs = _prepare_configs(edt, uses_top_p, sigma=sigma)
        state = BatchState.from_configs(cfgs, device=device, vocab_size=vocab_size)
        assert Plan.of(state) == (edt, uses_top_p)
        x = (torch.randn(len(cfgs), vocab_size, generator=g) * 2.0).to(device=device, dtype=dtype)
        _run_compiled(x, state, sig.inplace)
        if not sig.inplace:  # the one-row path writes its pair in place
            _run_compiled(x, state, True)
    _marking[0] = False
    with torch.compiler.set_stance("fail_on_recompile"):
        for edt, uses_top_p, sigma in _prepare_cases(device, dtype):
            cfgs = _prepare_configs(edt, uses_top_p, extra=3, sigma=sigma)
            state = BatchState.from_configs(cfgs, device=device, vocab_size=vocab_size)
            x = (torch.randn(len(cfgs), vocab_size, generator=g) * 2.0).to(device=device, dtype=dtype)
            _run_compiled(x, state, sig.inplace)


def _plans_of(device: torch.device, dtype: torch.dtype) -> list[tuple[str, bool]]:
    """Every ``(Plan.edt, Plan.top_p)`` a batch of ``dtype`` on ``device`` can take (``"rows"``: CPU
    only; no top-p plan where the native top-p kernel serves, see :func:`_plan_for`)."""
    edts = ("none", "rows", "all") if device.type == "cpu" else ("none", "all")
    return list(itertools.product(edts, (False,) if native_top_p.serves(device, dtype) else (False, True)))


def _prepare_cases(device: torch.device, dtype: torch.dtype) -> list[tuple[str, bool, bool]]:
    """``(Plan.edt, Plan.top_p, top-n-sigma)`` of the batches :func:`prepare` runs: every plan
    (:func:`_plans_of`), with top-n-sigma rows where the plan has EDT (:func:`_prepare_configs`
    says which programs each compiles); without the top-p plans (native top-p) the write without
    top-n-sigma, which their batches compiled, gets a batch of its own."""
    plans = _plans_of(device, dtype)
    cases = [(edt, uses_top_p, edt != "none") for edt, uses_top_p in plans]
    if ("none", True) not in plans:
        cases.append(("all", False, False))
    return cases


def _prepare_configs(edt: str, uses_top_p: bool, extra: int = 1, sigma: bool | None = None) -> list:
    """Configs of a batch that takes ``Plan(edt, uses_top_p)``: two rows (``extra`` = 3: four) with
    EDT for ``"all"``, with top-p (then more than half of the batch) for a top-p plan, and with
    top-k unless the plan is ``("all", False)``, so that every program after the threshold program
    is compiled with and without top-n-sigma: the write alone (no candidates), :func:`finish` (CPU,
    candidates, few top-p rows) and candidates + write (a device, or many top-p rows); and
    ``extra`` rows with EDT for ``"rows"`` and ``"all"`` and top-n-sigma but for
    ``"none"`` (each program with and without it; ``sigma`` given: with it or not), so the rows
    ``edt="rows"`` and the sigma pass read are a subset. Flat rows (the caller's) have nuclei
    beyond the candidates, so the search program compiles too where the native top-p kernel does
    not take them (a device, another dtype, no library). ``extra`` = 3: the same with other sizes
    (batch, subsets, largest k)."""
    from sample_smart.config import DecodeConfig

    edt_var = (0.8, 1.0, 1.0)
    top_k = uses_top_p or edt != "all"
    cfgs = [
        DecodeConfig(
            top_k=50 + 37 * i * (extra > 1) if top_k else None,
            top_p=(0.5 if i == 0 else 0.99) if uses_top_p else None,
            edt_var=edt_var if edt == "all" else None,
        )
        for i in range(2 if extra == 1 else 4)
    ]
    sigma = edt != "none" if sigma is None else sigma
    own = {"top_n_sigma": 1.0 if sigma else None, "edt_var": edt_var if edt != "none" else None, "min_p": 0.1}
    return cfgs + [DecodeConfig(**own) for _ in range(extra)]


def missing_compiler(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here (no C++ compiler on CPU, no Triton on a GPU),
    or None."""
    if device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler  # inductor's own search ($CXX, g++)

        try:
            get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001 - InvalidCxxCompiler and whatever the search raises
            return f"no C++ compiler for inductor ({type(exc).__name__}; set CXX or install g++)"
        return None
    from torch.utils._triton import has_triton

    return None if has_triton() else "Triton is not installed"


def warn_fallback(why: str) -> None:
    """One warning per reason: the fixed programs are not available, the eager chain runs."""
    if ("fallback", why) not in _warned:
        _warned.add(("fallback", why))
        logger.warning(
            "sample_smart: the compiled processor programs are not available (%s); the eager chain runs "
            "(correct, several times slower; see benchmarks/README.md)",
            why,
        )


def forget(vocab_size: int) -> None:
    """Forget the prepared signatures of one vocabulary (their calls run eager again); the compiled
    regions stay, so preparing it again is cheap."""
    with _lock:
        _prepared.difference_update({sig for sig in _prepared if sig.vocab == vocab_size})


def reset() -> None:
    """Forget every prepared signature and compiled region."""
    with _lock:
        _direct.clear()  # first: a call that finds a direct entry also finds its shapes
        _regions.clear()
        _programs.clear()
        _shapes.clear()
        _prepared.clear()
        _warned.clear()
        _fallbacks[0] = 0
