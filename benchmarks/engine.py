"""Engine benchmark: tokens/s of vLLM on the embedded model with and without sample_smart.

Run ``python -m benchmarks.engine`` (or ``sample-smart bench engine``) from the repository. Three
settings, measured in the same run, interleaved (so a change of machine load hits all alike):

- ``bare``: an engine *without* sample_smart's processor (the entry-point plugin is not loaded);
- ``installed``: an engine with the processor (as ``make_llm`` builds it), no request using it;
- ``full chain``: the same engine, every request on the full chain (EDT + dynamic top-k + epsilon
  + eta + min-p + greedy-threshold + calibrated-epsilon, ``benchmarks.processors.FULL_CHAIN``).

``--backend`` picks the processor backend of the engines with the processor (``eager``, the default;
``compiled``: ``SAMPLE_SMART_BACKEND=compiled`` in the worker, so ``torch.compile``; ``both``: one
engine per backend, and the full chain is measured on each, as ``full chain`` and
``full chain [compiled]``). The compile happens during the excluded warm-up generate.

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
MODES = ("bare", "installed", "full chain")
BACKENDS = ("eager", "compiled")


def full_chain_mode(backend: str) -> str:
    return "full chain" if backend == "eager" else f"full chain [{backend}]"


def modes_for(backends: tuple[str, ...]) -> tuple[str, ...]:
    return ("bare", "installed", *(full_chain_mode(b) for b in backends))


def prompts(batch: int) -> list[str]:
    return [
        f"{PROMPTS[i % len(PROMPTS)]}" + (f" ({i // len(PROMPTS)})" if i >= len(PROMPTS) else "") for i in range(batch)
    ]


def request_params(mode: str, batch: int, tokens: int) -> list[Any]:
    """One SamplingParams per prompt: sampling at temperature 1, seeded, exactly ``tokens`` tokens."""
    from vllm import SamplingParams

    from benchmarks.processors import FULL_CHAIN
    from sample_smart.integrations.vllm import sampling_params

    common = {"max_tokens": tokens, "min_tokens": tokens, "ignore_eos": True, "temperature": 1.0}
    if mode.startswith("full chain"):
        return [sampling_params(FULL_CHAIN, seed=i, **common) for i in range(batch)]
    return [SamplingParams(seed=i, **common) for i in range(batch)]


def measure(llm: Any, mode: str, batch: int, tokens: int) -> dict:
    """Generate ``batch`` prompts x ``tokens`` tokens once; return tokens and seconds."""
    params = request_params(mode, batch, tokens)
    t0 = time.perf_counter()
    outs = llm.generate(prompts(batch), params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"tokens": n, "seconds": seconds, "tokens_per_s": n / seconds}


# ----------------------------------------------------------------------------------- worker
def _worker(with_processor: bool) -> None:
    """Engine process: reads JSON lines {"mode", "batch", "tokens"} on stdin, answers on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # engine logs must not mix with the answers
    if with_processor:
        from sample_smart.integrations.vllm_engine import make_llm

        llm = make_llm()
    else:
        import vllm.v1.sample.logits_processor as lp

        lp._load_logitsprocs_plugins = lambda: []  # the bare engine: no entry-point plugins
        llm = _bare_llm()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        out.write(json.dumps(measure(llm, cmd["mode"], cmd["batch"], cmd["tokens"])) + "\n")
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
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine worker exited with code {self.proc.wait()}")
        return json.loads(line)

    def run(self, mode: str, batch: int, tokens: int) -> dict:
        self.proc.stdin.write(json.dumps({"mode": mode, "batch": batch, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def run(
    batches=(1, 8, 32), tokens: int = 64, repeats: int = 3, backends: tuple[str, ...] = ("eager",), log=print
) -> dict:
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend {b!r} is invalid: allowed {', '.join(BACKENDS)}")
    modes = modes_for(backends)
    workers = {"bare": Worker(False)}
    for b in backends:  # one engine per backend; "installed" runs on the first
        workers[full_chain_mode(b)] = Worker(True, b)
    workers["installed"] = workers[full_chain_mode(backends[0])]
    results: dict = {"tokens": tokens, "repeats": repeats, "backends": list(backends), "batches": {}}
    try:
        for batch in batches:
            runs = {mode: [] for mode in modes}
            for mode in modes:  # warm-up, excluded (the compiled backend compiles here)
                workers[mode].run(mode, batch, tokens)
            for _ in range(repeats):
                for mode in modes:
                    r = workers[mode].run(mode, batch, tokens)
                    assert r["tokens"] == batch * tokens, r
                    runs[mode].append(r["tokens_per_s"])
            med = {mode: statistics.median(v) for mode, v in runs.items()}
            entry = {
                "tokens_per_s": runs,
                "median_tokens_per_s": med,
                "ratio": {mode: med[mode] / med["bare"] for mode in modes if mode != "bare"},
                "ratio_installed": med["installed"] / med["bare"],
            }
            if "full chain" in med:
                entry["ratio_full_chain"] = med["full chain"] / med["bare"]
            results["batches"][str(batch)] = entry
            log(
                f"batch {batch:>3} x {tokens} tokens: bare {med['bare']:.1f} tok/s, "
                + ", ".join(
                    f"{mode} {med[mode]:.1f} ({med[mode] / med['bare']:.3f}x)" for mode in modes if mode != "bare"
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
        choices=["eager", "compiled", "both"],
        default="eager",
        help="processor backend: eager (default), compiled (torch.compile, compiled in the warm-up) "
        "or both (one engine each, full chain measured on each)",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", choices=["bare", "processor"], help=argparse.SUPPRESS)
    return p


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
        backends=BACKENDS if args.backend == "both" else (args.backend,),
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
