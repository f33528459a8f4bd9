"""Engine benchmark: tokens/s of vLLM on the embedded model with and without sample_smart.

Run ``python -m benchmarks.engine`` (or ``sample-smart bench engine``) from the repository. Three
settings, measured in the same run, interleaved (so a change of machine load hits all alike):

- ``bare``: an engine *without* sample_smart's processor (the entry-point plugin is not loaded);
- ``installed``: an engine with the processor (as ``make_llm`` builds it), no request using it;
- ``full chain``: the same engine, every request on the full chain (EDT + dynamic top-k + epsilon
  + eta + min-p + greedy-threshold + calibrated-epsilon, ``benchmarks.processors.FULL_CHAIN``);
- ``mixed``: every request on other settings (``MIXED_SETTINGS``, rotated every round), and request
  i stops after ``T/2 + i T / (2B)`` tokens, so in the second half of the run a request leaves at
  almost every step and the batch's mix of knob sets changes at every step; compared with ``bare
  (mixed lengths)``, the bare engine on the same lengths.

``--backend`` picks the processor backends of the engines with the processor (comma-separated,
first = the engine of ``installed``; default ``auto,eager``: the default backend and the previous
default, each with its own engine; ``compiled``: ``torch.compile`` per knob set, compiled during
the excluded warm-up). Modes on a backend other than ``auto`` are named ``full chain [eager]`` etc.
The ``auto`` engine compiles its programs when it starts (reported as ``prepare_s``).

Processor step times: the engines with the processor time every ``update_state`` + ``apply`` of
sample_smart's processor (one decode step's share of the processor) and report p50/p99/max per
mode, warm-up excluded, and the mean step as a share of the bare engine's mean decode step on the
same lengths with the tokens/s ratio it predicts (``step_share``): measured on every step, it does
not move with the drift of machine speed between rounds that makes the measured ratios noisy.

Jitter floor (``reference`` rows, not a setting of the ratios): the engine of the first backend
(``auto`` by default) also runs a round of plain requests in which every decode step times two
fixed workloads in the processor's place, on the same batch shape: ``matmul`` (``[B, 576] @
[576, V/12]``, no sample_smart code) and ``processor, fixed input`` (the full chain on three fixed
logits tensors in turn, no batch change; one tensor over and over would let ``topk``-like branches
learn it, see benchmarks/README.md). Their max/p50 is what this machine does to a few milliseconds
of fixed work inside the engine: the floor against which a processor step's max/p50 is read (over
as many steps: spikes are rare events).

Each engine lives in its own worker process (one engine per process), started once; the parent
sends it "generate B prompts x T tokens" requests. Every request samples (vLLM temperature 1.0,
seeded) and runs to exactly T tokens (``ignore_eos``). Per batch size, one warm-up generate per
setting is excluded; then ``--repeats`` rounds; tokens/s = B x T / wall time of ``LLM.generate``.
Reported: median tokens/s per setting and the ratios to ``bare`` from the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):",
    "Question: what is 12 + 30? Answer:",
    "Once upon a time, in a small village,",
    "List three uses of a paperclip:",
    "Translate to French: good morning",
    "The theory of relativity says",
    "A recipe for pancakes:",
    "Explain photosynthesis to a child.",
    "import numpy as np\n",
    "The best way to learn a language is",
    "Dear hiring manager,",
    "In 1969, the first humans",
    "Summarise the plot of Hamlet.",
    "Why is the sky blue?",
]
BACKENDS = ("auto", "eager", "compiled")
DEFAULT_BACKENDS = ("auto", "eager")
BARE_MIXED = "bare (mixed lengths)"
REFERENCE = "reference"  # plain requests; each step times the fixed workloads of ReferenceWork
# requests of the mixed stream: every knob, in several combinations
MIXED_SETTINGS = [
    {"min_p": 0.1, "top_k": 20},
    {"top_p": 0.9, "temperature": 0.8},
    {"edt_var": "0.8,1.0,1.0", "dynamic_top_k": [1, 2, 3, 5, 8, 13, 20, 30, 40, 50]},
    {"cal_acc": "-0.4,0.6,0.05", "greedy_threshold": 0.3},
    {"top_n_sigma": 1.5, "hewitt_epsilon": 1e-3},
    {"prob_threshold": 3e-4, "confidence_bin_only": 4},
    {"top_a": 0.1, "top_k": 300, "temperature": 0.7},
    {},
]


def _named(mode: str, backend: str) -> str:
    return mode if backend == "auto" else f"{mode} [{backend}]"


def modes_for(backends: tuple[str, ...]) -> tuple[str, ...]:
    chains = [_named(m, b) for b in backends for m in ("full chain", "mixed")]
    return ("bare", BARE_MIXED, "installed", *chains)


def backend_of(mode: str) -> str:
    return mode[mode.index("[") + 1 : -1] if mode.endswith("]") else "auto"


def lengths(batch: int, tokens: int, mode: str) -> list[int]:
    """Tokens per request: exactly ``tokens``, or staggered for the mixed stream and its bare twin."""
    if mode.startswith("mixed") or mode == BARE_MIXED:
        return [max(1, tokens // 2 + (i * tokens) // (2 * batch)) for i in range(batch)]
    return [tokens] * batch


def prompts(batch: int) -> list[str]:
    return [
        f"{PROMPTS[i % len(PROMPTS)]}" + (f" ({i // len(PROMPTS)})" if i >= len(PROMPTS) else "") for i in range(batch)
    ]


def request_params(mode: str, batch: int, tokens: int, round_: int = 0) -> list[Any]:
    """One SamplingParams per prompt: sampling at temperature 1, seeded, exactly its length in tokens."""
    from vllm import SamplingParams

    from benchmarks.processors import FULL_CHAIN
    from sample_smart.integrations.vllm import sampling_params

    out = []
    for i, n in enumerate(lengths(batch, tokens, mode)):
        common = {"max_tokens": n, "min_tokens": n, "ignore_eos": True, "temperature": 1.0, "seed": i}
        if mode.startswith("full chain"):
            out.append(sampling_params(FULL_CHAIN, **common))
        elif mode.startswith("mixed"):
            out.append(sampling_params(MIXED_SETTINGS[(i + round_) % len(MIXED_SETTINGS)], **common))
        else:
            out.append(SamplingParams(**common))
    return out


class ReferenceWork:
    """Fixed workloads of about a processor step's size, timed once per decode step (jitter floor)."""

    NAMES = ("matmul", "processor, fixed input")
    INPUTS = 3  # logits tensors the processor takes in turn

    def __init__(self) -> None:
        self._inputs: dict[tuple[int, int], tuple] = {}
        self._calls = 0

    def _for(self, rows: int, vocab: int) -> tuple:
        """The inputs for ``rows`` x ``vocab``, made on first use inside the engine's step (so in its
        grad mode: inference tensors, as the processor's prepared programs expect)."""
        if (rows, vocab) not in self._inputs:
            from benchmarks.processors import FULL_CHAIN
            from sample_smart import DecodeConfig
            from sample_smart.processors import BatchState

            g = torch.Generator().manual_seed(0)
            state = BatchState.from_configs([DecodeConfig(**FULL_CHAIN)] * rows, vocab_size=vocab)
            logits = [torch.randn(rows, vocab, generator=g) * 3.0 for _ in range(self.INPUTS)]
            h, w = torch.randn(rows, 576, generator=g), torch.randn(576, max(1, vocab // 12), generator=g)
            self._inputs[(rows, vocab)] = (state, logits, torch.empty_like(logits[0]), h, w)
        return self._inputs[(rows, vocab)]

    def run(self, rows: int, vocab: int) -> list[float]:
        """Seconds of each workload on ``rows`` x ``vocab``, in ``NAMES`` order."""
        from sample_smart.processors import process_core

        state, logits, buf, h, w = self._for(rows, vocab)
        t0 = time.perf_counter()
        torch.mm(h, w)
        t1 = time.perf_counter()
        self._calls += 1
        process_core(buf.copy_(logits[self._calls % self.INPUTS]), state, inplace=True)
        return [t1 - t0, time.perf_counter() - t1]


class StepTimer:
    """Times every ``update_state`` + ``apply`` of sample_smart's processor in this (engine) process;
    with ``with_reference`` set, every ``apply`` is followed by the timed :class:`ReferenceWork`."""

    def __init__(self, processor: Any) -> None:
        self.times: list[float] = []
        self.with_reference = False
        self.reference = ReferenceWork()
        self.reference_times: list[list[float]] = []
        self._pending = 0.0
        for name in ("update_state", "apply"):
            setattr(processor, name, self._timed(getattr(processor, name), name == "apply"))

    def _timed(self, fn, ends_step: bool):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._pending += time.perf_counter() - t0
                if ends_step:
                    self.times.append(self._pending)
                    self._pending = 0.0
                    if self.with_reference and args:
                        self.reference_times.append(self.reference.run(*args[0].shape))

        return call

    def take(self) -> list[float]:
        times, self.times = self.times, []
        return times

    def take_reference(self) -> dict[str, list[float]]:
        """Milliseconds per reference workload since the last call."""
        times, self.reference_times = self.reference_times, []
        return {name: [1e3 * t[i] for t in times] for i, name in enumerate(ReferenceWork.NAMES)}


def measure(llm: Any, mode: str, batch: int, tokens: int, round_: int = 0, timer: StepTimer | None = None) -> dict:
    """Generate ``batch`` prompts once; return tokens, seconds and the processor's step times (ms)."""
    params = request_params(mode, batch, tokens, round_)
    if timer is not None:
        timer.take()
        timer.take_reference()
        timer.with_reference = mode == REFERENCE
    t0 = time.perf_counter()
    outs = llm.generate(prompts(batch), params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    steps = [1e3 * t for t in timer.take()] if timer is not None else []
    out = {"tokens": n, "seconds": seconds, "tokens_per_s": n / seconds, "step_ms": steps}
    if timer is not None and timer.with_reference:
        out["reference_ms"] = timer.take_reference()
        timer.with_reference = False
    return out


# ----------------------------------------------------------------------------------- worker
def _worker(with_processor: bool) -> None:
    """Engine process: reads JSON lines {"mode", "batch", "tokens"} on stdin, answers on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # engine logs must not mix with the answers
    timer, ready = None, {"ready": True}
    if with_processor:
        from sample_smart.integrations.vllm import SampleSmartLogitsProcessor
        from sample_smart.integrations.vllm_engine import make_llm

        t0 = time.perf_counter()
        llm = make_llm()
        ready["start_s"] = time.perf_counter() - t0
        proc = SampleSmartLogitsProcessor._engines.get(id(llm.llm_engine.vllm_config))
        if proc is not None:  # the engine runs in this process (make_llm's CPU settings)
            timer = StepTimer(proc)
            ready["prepare_s"] = getattr(proc, "prepare_seconds", None)
    else:
        import vllm.v1.sample.logits_processor as lp

        lp._load_logitsprocs_plugins = lambda: []  # the bare engine: no entry-point plugins
        llm = _bare_llm()
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        out.write(json.dumps(measure(llm, cmd["mode"], cmd["batch"], cmd["tokens"], cmd["round"], timer)) + "\n")
        out.flush()


def _bare_llm():
    """make_llm's engine minus our processor (same model, same CPU settings)."""
    import vllm

    from sample_smart.integrations.vllm_engine import apply_cpu_environment, engine_kwargs, has_gpu

    if not has_gpu():
        apply_cpu_environment()
    kwargs = engine_kwargs()
    kwargs.pop("logits_processors", None)
    return vllm.LLM(**kwargs)


class Worker:
    def __init__(self, with_processor: bool, backend: str | None = None) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if backend is not None:  # the processor's backend, read in the engine's process(es)
            env["SAMPLE_SMART_BACKEND"] = backend
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.engine", "--worker", "processor" if with_processor else "bare"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine worker exited with code {self.proc.wait()}")
        return json.loads(line)

    def run(self, mode: str, batch: int, tokens: int, round_: int = 0) -> dict:
        self.proc.stdin.write(json.dumps({"mode": mode, "batch": batch, "tokens": tokens, "round": round_}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def _percentiles(ms: list[float]) -> dict | None:
    if not ms:
        return None
    q = sorted(ms)

    def at(f: float) -> float:
        return q[min(len(q) - 1, int(round(f * (len(q) - 1))))]

    return {
        "steps": len(q),
        "mean_ms": statistics.fmean(q),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": q[-1],
        "max_over_p50": q[-1] / at(0.5),
    }


def step_share(mode: str, batch: int, tokens: int, mean_ms: float, bare_tokens_per_s: float) -> dict:
    """The processor's mean step as a share of the bare engine's mean decode step on the same
    lengths (wall time / steps at its median tokens/s), and the tokens/s ratio that share predicts,
    1 / (1 + share): the ratio's estimate that the rounds' drift of machine speed does not move."""
    n = lengths(batch, tokens, mode)
    bare_step_ms = 1e3 * sum(n) / bare_tokens_per_s / max(n)
    share = mean_ms / bare_step_ms
    return {"bare_step_ms": bare_step_ms, "share": share, "predicted_ratio": 1.0 / (1.0 + share)}


def run(
    batches=(1, 8, 32), tokens: int = 64, repeats: int = 3, backends: tuple[str, ...] = DEFAULT_BACKENDS, log=print
) -> dict:
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend {b!r} is invalid: allowed {', '.join(BACKENDS)}")
    modes = modes_for(backends)
    bare = Worker(False)
    engines = {b: Worker(True, b) for b in backends}  # one engine per backend; "installed" runs on the first
    workers = {"bare": bare, BARE_MIXED: bare, "installed": engines[backends[0]], REFERENCE: engines[backends[0]]}
    workers.update({m: engines[backend_of(m)] for m in modes if m not in workers})
    results: dict = {
        "tokens": tokens,
        "repeats": repeats,
        "backends": list(backends),
        "engine_start": {b: w.ready for b, w in engines.items()},
        "batches": {},
    }
    for b, w in engines.items():
        log(
            f"engine [{b}]: started in {w.ready.get('start_s', 0):.1f} s, "
            f"processor programs prepared in {w.ready.get('prepare_s')} s"
        )
    try:
        for batch in batches:
            runs = {mode: [] for mode in modes}
            steps = {mode: [] for mode in modes}
            reference: dict[str, list[float]] = {name: [] for name in ReferenceWork.NAMES}
            for mode in (*modes, REFERENCE):  # warm-up, excluded (the compiled backend compiles here)
                workers[mode].run(mode, batch, tokens)
            for round_ in range(repeats):
                for mode in modes:
                    r = workers[mode].run(mode, batch, tokens, round_ + 1)
                    assert r["tokens"] == sum(lengths(batch, tokens, mode)), r
                    runs[mode].append(r["tokens_per_s"])
                    steps[mode] += r["step_ms"]
                for name, ms in workers[REFERENCE].run(REFERENCE, batch, tokens, round_ + 1)["reference_ms"].items():
                    reference[name] += ms
            med = {mode: statistics.median(v) for mode, v in runs.items()}

            def base(mode: str) -> float:
                return med[BARE_MIXED] if mode.startswith("mixed") else med["bare"]

            entry = {
                "tokens_per_s": runs,
                "median_tokens_per_s": med,
                "ratio": {mode: med[mode] / base(mode) for mode in modes if not mode.startswith("bare")},
                "ratio_installed": med["installed"] / med["bare"],
                "processor_step": {mode: _percentiles(v) for mode, v in steps.items() if v},
                "reference_step": {name: _percentiles(v) for name, v in reference.items()},
            }
            entry["processor_share"] = {
                mode: step_share(mode, batch, tokens, p["mean_ms"], base(mode))
                for mode, p in entry["processor_step"].items()
                if mode != "installed"
            }
            if "full chain" in med:
                entry["ratio_full_chain"] = med["full chain"] / med["bare"]
            results["batches"][str(batch)] = entry
            log(
                f"batch {batch:>3} x {tokens} tokens: bare {med['bare']:.1f} tok/s, "
                + ", ".join(
                    f"{mode} {med[mode]:.1f} ({entry['ratio'][mode]:.3f}x)" for mode in modes if mode in entry["ratio"]
                )
            )
            for mode, p in [*entry["processor_step"].items(), *entry["reference_step"].items()]:
                what = "processor step" if mode in entry["processor_step"] else "jitter floor"
                share = entry["processor_share"].get(mode)
                log(
                    f"    {what} [{mode}]: mean {p['mean_ms']:.2f} ms, p50 {p['p50_ms']:.2f} ms, "
                    f"p99 {p['p99_ms']:.2f} ms, max {p['max_ms']:.2f} ms ({p['max_over_p50']:.1f}x p50) "
                    f"over {p['steps']} steps"
                    + (
                        f"; {100 * share['share']:.1f}% of the bare step ({share['bare_step_ms']:.1f} ms), "
                        f"predicted ratio {share['predicted_ratio']:.3f}"
                        if share
                        else ""
                    )
                )
    finally:
        for w in {id(w): w for w in workers.values()}.values():
            w.close()
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample-smart bench engine", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, action="append", help="prompts per generate (repeatable; default 1, 8, 32)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per prompt (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per batch size (default 3)")
    p.add_argument(
        "--backend",
        default=",".join(DEFAULT_BACKENDS),
        help="processor backends, comma-separated, one engine each (default auto,eager: the default and "
        "the previous default); compiled = torch.compile per knob set, compiled in the warm-up",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", choices=["bare", "processor"], help=argparse.SUPPRESS)
    return p


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names or len(set(names)) != len(names):
        raise SystemExit(
            f"--backend={text!r} is invalid: allowed distinct names of {', '.join(BACKENDS)}, comma-separated"
        )
    return names


def main(argv: list[str] | None = None) -> dict | None:
    args = parser().parse_args(argv)
    if args.worker:
        _worker(args.worker == "processor")
        return None
    for name, value in (
        ("--tokens", args.tokens),
        ("--repeats", args.repeats),
        *(("--batch", b) for b in args.batch or ()),
    ):
        if value < 1:
            raise SystemExit(f"{name}={value} is invalid: allowed integers >= 1")
    results = run(
        batches=tuple(args.batch or (1, 8, 32)),
        tokens=args.tokens,
        repeats=args.repeats,
        backends=_backends(args.backend),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
