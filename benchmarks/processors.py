"""Processor benchmark: sample_smart's chain against the floors and the alternatives.

Run ``python -m benchmarks.processors`` (or ``sample-smart bench processors``) from the repository;
``--help`` lists the options. For every shape x dtype x logits kind, all cases run on the **same
tensors** (``INPUTS`` of them, seeds 0, 1, 2, taken in turn run by run: code whose speed depends on
the data, such as ``topk`` and ``sort``, would learn a single tensor's branches and look faster
than on the fresh logits of every decoding step), in one process, with the same thread count:

- floors: one read (``amax(-1)``), one read+write (``clone``), ``softmax``, a full ``sort``;
- ours (``process_core`` with a prepared ``BatchState``, as an engine calls it): each knob alone,
  the paper's decoders, the full chain with one config for all rows and with every row different,
  and the full chain per row through ``process`` (validation included). ``--backend`` picks the
  processor backends, comma-separated, every ours case under each, interleaved in the same run:
  ``auto`` (the default backend: the fixed programs of ``sample_smart.processors.plans``, prepared
  for the shape's vocabulary and dtype before its cases, as an engine does at start-up; the
  seconds are reported as ``prepare_s``), ``eager`` (the previous default) and ``compiled``
  (``torch.compile`` per knob set, compiled in the first, untimed call of a case; dropped between
  shapes). Default ``auto,eager``. Cases under the first backend are named ``ours: ...``, the
  others ``ours [eager]: ...`` etc., and their kept sets are compared with the first's;
- alternatives with the same semantics: transformers' warpers, vLLM's built-in min-p processor and
  top-k/top-p op, and the sort-based "naive" chain (``benchmarks.naive``).

Before any timing, every alternative's kept set (finite outputs) is compared with ours on the
first tensor; the number of tokens decided differently is reported (float32 boundary cases: a handful;
a semantic difference: thousands) and a run fails if it exceeds ``--max-mismatch`` (fraction).

Timing: warm-up calls excluded, then rounds in which every case runs once (interleaved, so a
change of machine load hits all cases alike) until each case has ``--repeats`` runs or used its
``--budget`` seconds (at least ``--min-runs``, default 5). In-place alternatives (vLLM's) get a fresh copy made
outside the timed region. CUDA: ``torch.cuda.synchronize()`` before and after each call.
Reported: median and min milliseconds and ``x read`` = median / median of the one-read floor.

Allocator (CPU): glibc maps every buffer above ~32 MB afresh per call, which makes large fresh
temporaries expensive here. ``--allocator both`` runs everything twice in subprocesses, with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` ("reuse") and without ("default"); the
setting of each run is printed and stored in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from benchmarks.naive import naive_process
from sample_smart import DecodeConfig, process
from sample_smart.processors import BatchState, compiled, get_backend, plans, prepare, process_core, set_backend

REUSE_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
DEFAULT_SHAPES = ((64, 49152), (256, 151936))
BACKENDS = ("auto", "eager", "compiled")
DEFAULT_BACKENDS = ("auto", "eager")
QUICK_SHAPES = ((4, 3000), (6, 20000))
INPUTS = 3  # logits tensors of one shape and kind (seeds 0..2) that the timed runs take in turn

# Calibrated-TopK: K per p_max decile, index 0 = [0.9, 1] (the reference scripts' order); 0 = greedy.
CAL_TOPK = [2, 3, 4, 4, 3, 2, 1, 0, 0, 0]
CAL_EPS = "-0.4,0.6,0.05"  # Calibrated-epsilon: keep 10^A p^B >= thr
FULL_CHAIN = {
    "edt_var": "0.8,1.0,1.0",
    "dynamic_top_k": [1, 2, 3, 5, 8, 13, 20, 30, 40, 50],
    "prob_threshold": 1e-4,
    "hewitt_epsilon": 1e-3,
    "min_p": 0.1,
    "greedy_threshold": 0.3,
    "cal_acc": CAL_EPS,
}
KNOBS: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 0.7},
    "edt": {"edt_var": "0.8,1.0,1.0"},
    "top_k": {"top_k": 50},
    "top_p": {"top_p": 0.9},
    "min_p": {"min_p": 0.1},
    "epsilon": {"prob_threshold": 3e-4},
    "eta": {"hewitt_epsilon": 1e-3},
    "dynamic_top_k": {"dynamic_top_k": FULL_CHAIN["dynamic_top_k"]},
    "greedy_threshold": {"greedy_threshold": 0.3},
    "confidence_bin_only": {"confidence_bin_only": 3},
    "cal_acc": {"cal_acc": CAL_EPS},
    "top_n_sigma": {"top_n_sigma": 1.0},
    "top_a": {"top_a": 0.2},
}
DECODERS: dict[str, dict[str, Any]] = {
    "Greedy-Threshold 0.3 + min-p 0.1": {"greedy_threshold": 0.3, "min_p": 0.1},
    "Calibrated-TopK": {"dynamic_top_k": CAL_TOPK},
    "Calibrated-epsilon": {"cal_acc": CAL_EPS},
}


def per_row_chain(batch: int) -> list[DecodeConfig]:
    """The full chain with every row's parameters different (deterministic)."""
    out = []
    for i in range(batch):
        f = (i % 17) / 16.0  # 0 .. 1
        out.append(
            DecodeConfig.from_dict(
                {
                    "edt_var": [0.6 + 0.4 * f, 0.5 + f, 0.8 + 0.4 * f],
                    "dynamic_top_k": [1 + (i + j) % 7 * 5 for j in range(10)],
                    "prob_threshold": 1e-5 * (1 + 20 * f),
                    "hewitt_epsilon": 1e-4 * (1 + 20 * f),
                    "min_p": 0.02 + 0.2 * f,
                    "greedy_threshold": 0.1 + 0.4 * f,
                    "cal_acc": [-0.2 - 0.5 * f, 0.5 + 0.3 * f, 0.03 + 0.04 * f],
                }
            )
        )
    return out


# ----------------------------------------------------------------------------------- data
def make_logits(batch: int, vocab: int, kind: str, dtype: torch.dtype, device: str, seed: int = 0) -> torch.Tensor:
    """``flat``: N(0, 2^2) logits (high entropy, the nucleus holds ~20% of the vocabulary);
    ``peaked``: the same plus a boost of 0..14 (rising over the rows) on two tokens, so p_max spans
    [0, 1] and every decile-dependent rule is exercised, as in a language model's steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g) * 2.0
    if kind == "peaked":
        boost = torch.linspace(0.0, 14.0, batch)
        x[:, 0] += boost
        x[:, 1] += 0.8 * boost
    elif kind != "flat":
        raise ValueError(f"kind={kind!r} is invalid: allowed 'flat' or 'peaked'")
    return x.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    group: str  # floor | ours | transformers | vllm | naive
    fn: Callable[[Any], Any]
    setup: Callable[[torch.Tensor], Any] = staticmethod(lambda x: x)  # not timed
    same_as: str | None = None  # name of the ours case with the same semantics
    times: list[float] = field(default_factory=list)
    mismatch: int | None = None


def ours_name(name: str, backend: str = "auto", first: str = "auto") -> str:
    """Case name of ours under ``backend``: ``ours: name`` under the run's first backend, else
    ``ours [eager]: name`` etc."""
    return f"ours: {name}" if backend == first else f"ours [{backend}]: {name}"


def _under(backend: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` with the processor backend set to ``backend`` for the call (a module-level switch)."""

    def call(x):
        set_backend(backend)
        return fn(x)

    return call


def _ours(name: str, state: BatchState, backend: str = "auto", first: str = "auto") -> Case:
    return Case(ours_name(name, backend, first), "ours", _under(backend, lambda x: process_core(x, state)))


def _state(cfg: dict | list[DecodeConfig], batch: int, device: str) -> BatchState:
    cfgs = cfg if isinstance(cfg, list) else [DecodeConfig.from_dict(cfg)] * batch
    return BatchState.from_configs(cfgs, device=device)


def _transformers_cases() -> list[Case]:
    try:
        import transformers as tf
    except ImportError:
        return []
    ids = torch.zeros(1, 1, dtype=torch.long)
    warpers = {
        "min_p": tf.MinPLogitsWarper(min_p=KNOBS["min_p"]["min_p"]),
        "epsilon": tf.EpsilonLogitsWarper(epsilon=KNOBS["epsilon"]["prob_threshold"]),
        "eta": tf.EtaLogitsWarper(epsilon=KNOBS["eta"]["hewitt_epsilon"]),
        "top_k": tf.TopKLogitsWarper(top_k=KNOBS["top_k"]["top_k"]),
        "top_p": tf.TopPLogitsWarper(top_p=KNOBS["top_p"]["top_p"]),
    }
    names = {"min_p": "MinP", "epsilon": "Epsilon", "eta": "Eta", "top_k": "TopK", "top_p": "TopP"}
    return [
        Case(
            f"transformers {names[k]}LogitsWarper",
            "transformers",
            (lambda w: lambda x: w(ids, x))(w),
            same_as=f"ours: {k}",
        )
        for k, w in warpers.items()
    ]


def _vllm_cases(batch: int, device: str) -> list[Case]:
    try:
        from types import SimpleNamespace

        from vllm import SamplingParams
        from vllm.v1.sample.logits_processor import BatchUpdate
        from vllm.v1.sample.logits_processor.builtin import MinPLogitsProcessor
        from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p
    except ImportError:
        return []
    config = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=batch))
    min_p = MinPLogitsProcessor(config, torch.device(device), False)
    added = [(i, SamplingParams(min_p=KNOBS["min_p"]["min_p"]), [], []) for i in range(batch)]
    min_p.update_state(BatchUpdate(batch_size=batch, removed=[], added=added, moved=[]))
    k = torch.full((batch,), KNOBS["top_k"]["top_k"], dtype=torch.long, device=device)
    p = torch.full((batch,), KNOBS["top_p"]["top_p"], dtype=torch.float32, device=device)
    copy = staticmethod(lambda x: x.clone())  # vLLM writes in place: a fresh copy, not timed
    return [
        Case("vLLM MinPLogitsProcessor", "vllm", min_p.apply, copy, same_as="ours: min_p"),
        Case(
            "vLLM apply_top_k_top_p (k)", "vllm", lambda x: apply_top_k_top_p(x, k, None), copy, same_as="ours: top_k"
        ),
        Case(
            "vLLM apply_top_k_top_p (p)", "vllm", lambda x: apply_top_k_top_p(x, None, p), copy, same_as="ours: top_p"
        ),
    ]


def build_cases(
    batch: int,
    device: str,
    with_transformers: bool = True,
    with_vllm: bool = True,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
) -> list[Case]:
    """Every case; ours once per backend. The alternatives are compared with ours under the first
    backend, and ours under a later backend with ours under the first."""
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend {b!r} is invalid: allowed {', '.join(BACKENDS)}")
    cases = [
        Case("floor: one read (amax)", "floor", lambda x: x.amax(dim=-1)),
        Case("floor: read+write (clone)", "floor", lambda x: x.clone()),
        Case("floor: softmax", "floor", lambda x: torch.softmax(x, dim=-1)),
        Case("floor: full sort", "floor", lambda x: torch.sort(x, dim=-1, descending=True)),
    ]
    full = _state(FULL_CHAIN, batch, device)
    rows = per_row_chain(batch)
    per_row = _state(rows, batch, device)
    states = {name: _state(cfg, batch, device) for name, cfg in {**KNOBS, **DECODERS}.items()}
    states["full chain, one config"] = full
    states["full chain, per-row configs"] = per_row
    first = backends[0]
    for backend in backends:
        for name, state in states.items():
            case = _ours(name, state, backend, first)
            if backend != first:
                case.same_as = ours_name(name, first, first)
            cases.append(case)
        cases.append(
            Case(
                ours_name("full chain, per-row, process() (validated)", backend, first),
                "ours",
                _under(backend, lambda x: process(x, per_row)),
                same_as=ours_name("full chain, per-row configs", backend, first),
            )
        )
    naive_of = {
        f"ours: {n}": _state(c, batch, device)
        for n, c in {**DECODERS, "top_p": KNOBS["top_p"], "min_p": KNOBS["min_p"]}.items()
    }
    naive_of["ours: full chain, one config"] = full
    naive_of["ours: full chain, per-row configs"] = per_row
    for target, state in naive_of.items():
        cases.append(
            Case(
                f"naive (sort) {target[6:]}", "naive", (lambda s: lambda x: naive_process(x, s))(state), same_as=target
            )
        )
    if with_transformers:
        cases += _transformers_cases()
    if with_vllm:
        cases += _vllm_cases(batch, device)
    return cases


# ----------------------------------------------------------------------------------- running
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_agreement(cases: list[Case], x: torch.Tensor) -> None:
    """Set ``mismatch`` of every case with a ``same_as``: tokens whose kept/removed decision differs."""
    kept = {}
    for case in cases:
        if case.group == "ours":
            kept[case.name] = torch.isfinite(case.fn(case.setup(x)))
    for case in cases:
        if case.same_as is not None:
            theirs = torch.isfinite(case.fn(case.setup(x)))
            case.mismatch = int((theirs != kept[case.same_as]).sum())


def time_cases(
    cases: list[Case],
    inputs: Sequence[torch.Tensor],
    device: str,
    repeats: int,
    budget: float,
    warmup: int = 2,
    min_runs: int = 5,
) -> None:
    """Interleaved rounds; each case runs until ``repeats`` runs or ``budget`` seconds (>= ``min_runs``),
    run ``i`` of a case on ``inputs[i % len(inputs)]``: data-dependent code (``topk``, ``sort``)
    timed on one tensor over and over runs faster than on the new logits of every step, since the
    branch predictor learns that tensor (``topk`` of [32, 768], k = 50: ~70 us on one tensor, ~240
    us on fresh ones, measured in benchmarks/README.md)."""
    want = {}
    for case in cases:
        for i in range(warmup):
            arg = case.setup(inputs[i % len(inputs)])
            _sync(device)
            t0 = time.perf_counter()
            case.fn(arg)
            _sync(device)
            first = time.perf_counter() - t0
        want[case.name] = (
            repeats if warmup == 0 else max(min(min_runs, repeats), min(repeats, int(budget / max(first, 1e-6))))
        )
    for _ in range(max(want.values())):
        for case in cases:
            if len(case.times) >= want[case.name]:
                continue
            arg = case.setup(inputs[len(case.times) % len(inputs)])
            _sync(device)
            t0 = time.perf_counter()
            out = case.fn(arg)
            _sync(device)
            case.times.append(time.perf_counter() - t0)
            del out, arg


def allocator_setting() -> str:
    reuse = all(os.environ.get(k) == v for k, v in REUSE_ENV.items())
    return "reuse (MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736)" if reuse else "default glibc"


def run(
    shapes=DEFAULT_SHAPES,
    dtypes=("float32",),
    kinds=("peaked", "flat"),
    device: str = "cpu",
    repeats: int = 21,
    budget: float = 2.0,
    quick: bool = False,
    with_transformers: bool = True,
    with_vllm: bool = True,
    max_mismatch: float = 1e-4,
    only: list[str] | None = None,
    warmup: int = 2,
    min_runs: int = 5,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
    log=print,
) -> dict:
    """Run the benchmark; return the JSON-ready results. ``quick``: every case once, no warm-up.
    ``backends``: the processor backends ours runs under (see ``build_cases``)."""
    results = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "device": device,
            "allocator": allocator_setting() if device == "cpu" else "n/a",
            "backends": list(backends),
        },
        "method": "median and min of interleaved runs after warm-up (compiles included in the warm-up), "
        f"each run on the next of {INPUTS} logits tensors (seeds 0..{INPUTS - 1}); x_read = median / median(one read)",
        "runs": [],
    }
    previous = get_backend()
    try:
        _run_shapes(
            results,
            shapes,
            dtypes,
            kinds,
            device,
            repeats,
            budget,
            quick,
            with_transformers,
            with_vllm,
            max_mismatch,
            only,
            warmup,
            min_runs,
            tuple(backends),
            log,
        )
    finally:
        set_backend(previous)
    return results


def _run_shapes(
    results,
    shapes,
    dtypes,
    kinds,
    device,
    repeats,
    budget,
    quick,
    with_transformers,
    with_vllm,
    max_mismatch,
    only,
    warmup,
    min_runs,
    backends,
    log,
) -> None:
    for batch, vocab in shapes:
        if "compiled" in backends:
            compiled.reset()  # one vocabulary per compile, as in an engine (no dynamic-vocab recompile)
        plans.reset()
        for dtype in dtypes:
            prepare_s = None
            if "auto" in backends and not quick:  # what an engine does at start-up, once per signature
                set_backend("auto")
                prepare_s = prepare(vocab, getattr(torch, dtype), device, inplace=False)
                log(f"[{batch}, {vocab}] {dtype}: auto backend programs prepared in {prepare_s} s")
            for kind in kinds:
                inputs = [make_logits(batch, vocab, kind, getattr(torch, dtype), device, s) for s in range(INPUTS)]
                x = inputs[0]
                cases = build_cases(batch, device, with_transformers, with_vllm, backends)
                if only:  # the one-read floor always stays (the ratios' reference)
                    cases = [c for i, c in enumerate(cases) if i == 0 or any(o in c.name for o in only)]
                    names = {c.name for c in cases}
                    cases = [c for c in cases if c.same_as is None or c.same_as in names]
                check_agreement(cases, x)
                bad = [
                    c
                    for c in cases
                    if c.mismatch is not None
                    and dtype == "float32"
                    and c.mismatch > max(2 * batch, max_mismatch * x.numel())
                ]
                if bad:
                    raise AssertionError(
                        "outputs disagree before timing: "
                        + ", ".join(f"{c.name} vs {c.same_as}: {c.mismatch} tokens" for c in bad)
                    )
                time_cases(
                    cases,
                    inputs,
                    device,
                    repeats=1 if quick else repeats,
                    budget=budget,
                    warmup=0 if quick else warmup,
                    min_runs=min_runs,
                )
                read = statistics.median(cases[0].times)
                rows = [
                    {
                        "case": c.name,
                        "group": c.group,
                        "median_ms": 1e3 * statistics.median(c.times),
                        "min_ms": 1e3 * min(c.times),
                        "x_read": statistics.median(c.times) / read,
                        "runs": len(c.times),
                        "same_as": c.same_as,
                        "mismatch": c.mismatch,
                    }
                    for c in cases
                ]
                run_ = {"shape": [batch, vocab], "dtype": dtype, "kind": kind, "prepare_s": prepare_s, "results": rows}
                results["runs"].append(run_)
                log(format_table(run_, results["machine"]))


def format_table(run_: dict, machine: dict) -> str:
    b, v = run_["shape"]
    head = (
        f"\n[{b}, {v}] {run_['dtype']} {run_['kind']} logits | device {machine['device']}, "
        f"{machine['threads']} threads, allocator: {machine['allocator']}, "
        f"backend: {'+'.join(machine.get('backends', ['eager']))}"
    )
    width = max([52] + [len(r["case"]) for r in run_["results"]])
    lines = [head, f"{'case':<{width}} {'median ms':>10} {'min ms':>9} {'x read':>8} {'runs':>5}  agrees with ours"]
    for r in run_["results"]:
        agree = "" if r["same_as"] is None else f"{r['mismatch']} tokens differ from {r['same_as']}"
        lines.append(
            f"{r['case']:<{width}} {r['median_ms']:>10.2f} {r['min_ms']:>9.2f} {r['x_read']:>8.1f} "
            f"{r['runs']:>5}  {agree}"
        )
    return "\n".join(lines)


def _short(name: str) -> str:
    return name[len("ours: ") :] if name.startswith("ours: ") else name


def markdown(results: dict) -> str:
    """The runs as markdown tables (for benchmarks/README.md)."""
    parts = []
    for run_ in results["runs"]:
        b, v = run_["shape"]
        parts.append(
            f"**[{b}, {v}] {run_['dtype']}, {run_['kind']} logits** ({results['machine']['threads']} "
            f"threads, allocator: {results['machine']['allocator']}, backend: "
            f"{'+'.join(results['machine'].get('backends', ['eager']))})\n"
        )
        parts.append("| case | median ms | min ms | x read | tokens differing from ours |")
        parts.append("|---|---:|---:|---:|---|")
        for r in run_["results"]:
            agree = "" if r["same_as"] is None else f"{r['mismatch']} (vs {_short(r['same_as'])})"
            parts.append(f"| {r['case']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['x_read']:.1f} | {agree} |")
        parts.append("")
    return "\n".join(parts)


def plot(results: dict, path: str) -> None:
    """Bar chart of ``x read`` (log scale) per case, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(11, 0.22 * len(runs[0]["results"]) * len(runs) + 1.5), squeeze=False
    )
    colours = {
        "floor": "0.6",
        "ours": "tab:green",
        "transformers": "tab:orange",
        "vllm": "tab:blue",
        "naive": "tab:red",
    }
    for ax, run_ in zip(axes[:, 0], runs):
        rows = run_["results"][::-1]
        ax.barh([r["case"] for r in rows], [r["x_read"] for r in rows], color=[colours[r["group"]] for r in rows])
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.5)
        ax.set_xlabel("median time / median time of one read (amax) of the same tensor (log scale)")
        ax.set_title(
            f"{run_['shape']} {run_['dtype']} {run_['kind']} logits; allocator: {results['machine']['allocator']}",
            fontsize=9,
        )
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------- CLI
def _shape(text: str) -> tuple[int, int]:
    try:
        b, v = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape={text!r} is invalid: allowed BxV, e.g. 256x151936") from None
    if b < 1 or v < 2:
        raise argparse.ArgumentTypeError(f"--shape={text!r} is invalid: allowed B >= 1 and V >= 2")
    return b, v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample-smart bench processors", description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=_shape, action="append", help="BxV (repeatable); default 64x49152 and 256x151936")
    p.add_argument(
        "--dtype",
        action="append",
        choices=["float32", "bfloat16", "float16"],
        help="repeatable; default float32 and bfloat16",
    )
    p.add_argument("--kind", action="append", choices=["peaked", "flat"], help="repeatable; default both")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--repeats", type=int, default=21, help="timed runs per case at most (default 21)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds per case at most (default 2)")
    p.add_argument("--min-runs", type=int, default=5, help="timed runs per case at least (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per case first (default 2)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument(
        "--allocator",
        choices=["current", "reuse", "default", "both"],
        default="current",
        help="CPU: run under the given glibc allocator setting (subprocesses); default: as started",
    )
    p.add_argument(
        "--backend",
        default=",".join(DEFAULT_BACKENDS),
        help="processor backends for ours, comma-separated, same run (default auto,eager: the default "
        "backend, prepared per shape, and the previous default); compiled = torch.compile per knob set",
    )
    p.add_argument("--quick", action="store_true", help="CI mode: small shapes, every case once, outputs checked")
    p.add_argument("--only", action="append", help="run only the cases whose name contains this (repeatable)")
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--no-vllm", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write a bar chart (PNG) here")
    p.add_argument("--markdown", help="write the tables as markdown here")
    return p


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    if not names or len(set(names)) != len(names) or any(b not in BACKENDS for b in names):
        raise SystemExit(
            f"--backend={text!r} is invalid: allowed distinct names of {', '.join(BACKENDS)}, comma-separated"
        )
    return names


def _subprocess_runs(args: argparse.Namespace, argv: list[str]) -> dict:
    settings = ["reuse", "default"] if args.allocator == "both" else [args.allocator]
    merged: dict = {"by_allocator": []}
    base = [a for a in argv]
    for setting in settings:
        env = {k: v for k, v in os.environ.items() if k not in REUSE_ENV}
        if setting == "reuse":
            env.update(REUSE_ENV)
        out = Path(f".bench-{os.getpid()}-{setting}.json").resolve()
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.processors",
            *_strip(base),
            "--allocator",
            "current",
            "--json",
            str(out),
        ]
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        subprocess.run(cmd, env=env, check=True)
        merged["by_allocator"].append(json.loads(out.read_text()))
        out.unlink()
    return merged


def _strip(argv: list[str]) -> list[str]:
    """argv without --allocator/--json/--plot (and their values)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--allocator", "--json", "--plot", "--markdown"):
            skip = True
            continue
        if a.startswith(("--allocator=", "--json=", "--plot=", "--markdown=")):
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator != "current" and args.device == "cpu":
        results = _subprocess_runs(args, argv)
        runs_for_plot = results["by_allocator"][0]
    else:
        shapes = args.shape or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
        dtypes = args.dtype or (["float32"] if args.quick else ["float32", "bfloat16"])
        results = run(
            shapes=shapes,
            dtypes=dtypes,
            kinds=args.kind or ["peaked", "flat"],
            device=args.device,
            repeats=args.repeats,
            budget=args.budget,
            quick=args.quick,
            with_transformers=not args.no_transformers,
            with_vllm=not args.no_vllm,
            only=args.only,
            warmup=args.warmup,
            min_runs=args.min_runs,
            backends=_backends(args.backend),
        )
        runs_for_plot = results
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(runs_for_plot, args.plot)
    if args.markdown:
        runs = results.get("by_allocator", [results])
        Path(args.markdown).write_text("\n".join(markdown(r) for r in runs))
    return results


if __name__ == "__main__":
    main()
