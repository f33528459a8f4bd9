"""The decoder chain, top to bottom.

1. temperature or EDT scales each row (rows without either are untouched);
2. the shared statistics of the tempered rows (max m, logsumexp z, entropy H, p_max) are
   computed once, and only those some rule needs;
3. every rule a row uses gives a threshold tau on the tempered logits (see ``rules``); the
   kept sets are intersected by a row-wise max of the taus; ``tau <= m`` so the argmax is
   never removed and every row keeps at least one token;
4. one write: ``x[x < tau] = -inf``.

With the opt-in CPU fast path the rows go through this in cache-sized blocks
(see :mod:`~sample_smart.processors.paths`).

Which rules run is decided by the host flags of :class:`BatchState` only, so
:func:`process_core` has no host sync and compiles with ``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sample_smart.config import DecodeConfig
from sample_smart.processors import paths, rules
from sample_smart.processors.select import chunk_maxima, largest_values, uses_chunks
from sample_smart.processors.state import BatchState
from sample_smart.processors.stats import finite_std, row_stats
from sample_smart.processors.temperature import apply_temperature
from sample_smart.processors.top_p import CANDIDATES as TOP_P_CANDIDATES

__all__ = ["process", "process_core", "row_thresholds", "validate_logits"]

_WORK_DTYPES = (torch.float32, torch.float64)
CPU_BLOCK_ELEMENTS = 1 << 20  # logits per row block on CPU (4 MiB of float32)


def row_thresholds(x: torch.Tensor, state: BatchState, m: torch.Tensor | None = None,
                   cmax: torch.Tensor | None = None) -> torch.Tensor:
    """The combined per-row threshold tau ([B]) on tempered logits ``x``: keep ``x >= tau``.

    ``m``: the row max of ``x``, ``cmax``: its chunk maxima (see ``select``), when known."""
    if m is None and cmax is not None:
        m = cmax.amax(dim=-1)
    stats = row_stats(x, need_z=state.needs_logsumexp, need_entropy=state.any_eta, m=m,
                      keep_exp=state.any_top_p)
    m, z = stats.m, stats.z
    p_max = (m - z).exp() if z is not None else None
    taus: list[torch.Tensor] = []
    if state.any_greedy:
        taus.append(rules.greedy_tau(m, state.greedy))
    if state.any_min_p:
        taus.append(rules.min_p_tau(m, state.log_min_p))
    if state.any_eps:
        taus.append(rules.epsilon_tau(z, state.log_eps))
    if state.any_eta:
        taus.append(rules.eta_tau(z, stats.entropy, state.log_eta))
    if state.any_cal:
        taus.append(rules.calibrated_epsilon_tau(z, state.cal_log_p))
    if state.any_greedy_threshold:
        taus.append(rules.greedy_threshold_tau(m, p_max, state.greedy_threshold))
    if state.any_conf_bin:
        taus.append(rules.confidence_bin_tau(m, p_max, state.conf_bin))
    if state.any_n_sigma:
        taus.append(rules.top_n_sigma_tau(m, finite_std(x), state.n_sigma))
    values = None  # one topk serves top-k, dynamic top-k and top-p's candidate set
    any_k = state.any_top_k or state.any_dynamic_top_k
    if any_k or state.any_top_p:
        values = largest_values(x, candidates_needed(state), cmax)
    if any_k:
        taus.append(rules.top_k_tau(x, state, p_max, values))
    if state.any_top_p:
        taus.append(rules.top_p_tau(x, m, stats.e, stats.s, state.top_p, values))
    if not taus:
        return torch.full_like(m, float("-inf"))
    tau = taus[0]
    for t in taus[1:]:
        tau = torch.maximum(tau, t)
    return torch.minimum(tau, m)  # the argmax always survives


def candidates_needed(state: BatchState) -> int:
    """How many of each row's largest logits the batch's rules need (0: none): the largest k of
    top-k / dynamic top-k, and top-p's candidate set."""
    any_k = state.any_top_k or state.any_dynamic_top_k
    if not (any_k or state.any_top_p):
        return 0
    return max(state.max_top_k if any_k else 1, TOP_P_CANDIDATES if state.any_top_p else 1)


def _process_rows(logits: torch.Tensor, state: BatchState, inplace: bool,
                  out: torch.Tensor | None) -> torch.Tensor:
    """The chain on a block of rows; the result goes to ``out`` when given (a view of the output)."""
    dtype = logits.dtype
    x = logits if dtype in _WORK_DTYPES else logits.float()
    owned = x is not logits or inplace  # may we write into x?
    m = cmax = None
    k = candidates_needed(state)
    if k and uses_chunks(x.shape[-1], k):  # chunk maxima: top-k candidates, and the row max for free
        cmax = chunk_maxima(x)
        m = cmax.amax(dim=-1)
    if state.any_temperature or state.any_edt:
        tempered = apply_temperature(x, state, inplace=owned, m=m)
        x, m, owned = tempered.x, tempered.m, True
        cmax = None if cmax is None else tempered.map(cmax)
    tau = row_thresholds(x, state, m=m, cmax=cmax).unsqueeze(-1)
    if dtype not in _WORK_DTYPES and (state.any_temperature or state.any_edt):
        res = _tempered_half_output(x, tau, state, dtype)
        return res if out is None else out.copy_(res)
    if out is not None:  # CPU block: the one write, row by row with a vectorised select
        _write_rows(x, tau.flatten(), out if out.dtype == x.dtype else x)  # x: our float copy
        if out.dtype != x.dtype:
            out.copy_(x)
        return out
    drop = x < tau
    res = x.masked_fill_(drop, float("-inf")) if owned else x.masked_fill(drop, float("-inf"))
    return res if res.dtype == dtype else res.to(dtype)


def _tempered_half_output(x: torch.Tensor, tau: torch.Tensor, state: BatchState,
                          dtype: torch.dtype) -> torch.Tensor:
    """The write for float16/bfloat16 logits when some row is tempered (``x``: our float32 copy).

    ``logits / T`` leaves the half range for small T (fp16 overflows at 65504: ``30 / 1e-4``), so
    tempered rows are returned as ``(x - max) / T`` (EDT rows are shifted already; the same
    distribution, the max at 0) and kept values below the dtype's lowest finite value are floored
    there (their probability is 0 in that dtype either way). Removed tokens, and -inf inputs, stay -inf.
    """
    drop = x < tau.clamp(min=torch.finfo(x.dtype).min)  # -inf inputs are dropped even where tau = -inf
    shift = torch.where(state.temperature != 1.0, x.amax(dim=-1), 0.0)
    x = x.sub_(shift.unsqueeze(-1)).clamp_(min=torch.finfo(dtype).min).masked_fill_(drop, float("-inf"))
    return x.to(dtype)


def _write_rows(x: torch.Tensor, tau: torch.Tensor, dst: torch.Tensor) -> None:
    """``dst[i] = x[i]`` where ``x[i] >= tau[i]``, else -inf (CPU, eager; ``dst`` may be ``x``).

    ``aten.threshold`` (``x if x > t else value``) with ``t`` = the float just below tau is the
    same comparison; unlike ``masked_fill``/``where`` it is vectorised on CPU (measured ~20x
    faster). tau is read on the host, which on CPU waits for nothing."""
    below = torch.nextafter(tau, torch.full_like(tau, float("-inf"))).tolist()
    for i, t in enumerate(below):
        if t == float("-inf") and dst is x:
            continue  # nothing to remove, nothing to copy
        torch.ops.aten.threshold.out(x[i], t, float("-inf"), out=dst[i])


def _rows_per_block(batch: int, vocab: int) -> int:
    """CPU: rows per block so that a block's float32 work tensors stay in cache."""
    return max(1, min(batch, CPU_BLOCK_ELEMENTS // max(1, vocab)))


def process_core(logits: torch.Tensor, state: BatchState, inplace: bool = False) -> torch.Tensor:
    """Apply the batch's decoders to ``logits`` [B, V]; no validation, no host sync.

    Returns the tempered logits with -inf outside each row's kept set, in the input dtype
    (statistics are computed in float32 for half-precision input). Returns ``logits`` itself
    when no row uses any knob; otherwise a new tensor, or ``logits`` modified in place when
    ``inplace`` (float32/float64 input only).

    By default the whole batch is one block of whole-tensor ops, run op by op. With the compiled
    backend (``SAMPLE_SMART_BACKEND=compiled``, see :mod:`~sample_smart.processors.compiled`) the
    same program runs through ``torch.compile``; with the opt-in CPU fast path (eager backend only,
    see :mod:`~sample_smart.processors.paths`) the rows are processed in blocks of about
    ``CPU_BLOCK_ELEMENTS`` logits, so every pass after the first read of a block hits the cache and
    the temporaries stay small.
    """
    if state.is_noop:
        return logits
    work_inplace = inplace and logits.dtype in _WORK_DTYPES
    if paths.use_compiled(logits):
        from sample_smart.processors import compiled  # calls back into this module

        return compiled.run(logits, state, work_inplace)
    batch, vocab = logits.shape
    block = _rows_per_block(batch, vocab)
    if not paths.use_cpu_fast_path(logits):
        return _process_rows(logits, state, work_inplace, out=None)
    out = logits if work_inplace else torch.empty_like(logits)
    for start in range(0, batch, block):
        stop = min(batch, start + block)
        _process_rows(logits[start:stop], state.rows(start, stop), work_inplace, out=out[start:stop])
    return out


def validate_logits(logits: torch.Tensor) -> None:
    """Raise ValueError unless ``logits`` is a float [B, V] tensor whose every row has a finite max
    and no NaN (rows may contain -inf, e.g. masked vocabulary padding). Reads the device."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [batch, vocab] with vocab >= 1, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor (fp32, fp16, bf16), got {logits.dtype}")
    # amax propagates NaN, so one read finds NaN rows, all -inf rows and +inf rows alike
    row_max = logits.amax(dim=-1)
    bad = ~torch.isfinite(row_max)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"logits rows {rows[:10]}{'...' if len(rows) > 10 else ''} contain NaN or have no finite "
            "value (allowed: finite logits, with -inf for masked tokens)"
        )


def process(logits: torch.Tensor, configs: DecodeConfig | Sequence[DecodeConfig] | BatchState,
            inplace: bool = False) -> torch.Tensor:
    """Validate ``logits`` and apply the decoders.

    ``configs``: one :class:`DecodeConfig` for all rows, a sequence of B of them (rows may differ
    in every knob), or a prepared :class:`BatchState`. See :func:`process_core` for the result.
    """
    validate_logits(logits)
    batch = logits.shape[0]
    if isinstance(configs, BatchState):
        state = configs
    else:
        if isinstance(configs, DecodeConfig):
            configs = [configs] * batch
        elif isinstance(configs, dict):
            raise TypeError("configs must be DecodeConfig objects: use DecodeConfig.from_dict(d)")
        state = BatchState.from_configs(configs, device=logits.device, vocab_size=logits.shape[-1])
    if state.batch_size != batch:
        raise ValueError(f"got {state.batch_size} configs for a batch of {batch} rows")
    if state.device.type != logits.device.type:
        raise ValueError(f"BatchState is on {state.device} but logits are on {logits.device}")
    return process_core(logits, state, inplace=inplace)
