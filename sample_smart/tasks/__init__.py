"""lm-eval task files shipped with sample_smart, and where to find them.

The task YAMLs live in this package (so ``pip install sample_smart`` ships them) and a
source checkout also exposes them as ``tasks/`` at the repository root. Tasks:

* ``arith_mini``: generated multi-step arithmetic word problems (offline; :mod:`.arith`);
* ``gsm8k_fewshot``: GSM8K, 8-shot chain of thought (hub or local JSONL; :mod:`.gsm8k`);
* ``bbh_cot_fewshot_mini``: a few BIG-Bench Hard subtasks, 3-shot chain of thought (hub).

Use them with lm-eval's ``--include_path $(python -c "import sample_smart.tasks as t; print(t.tasks_dir())")``
or ``lm_eval.tasks.TaskManager(include_path=str(tasks_dir()))``; ``sample-smart eval`` does it for you.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_TASKS = ("arith_mini", "gsm8k_fewshot", "bbh_cot_fewshot_mini")
DEFAULT_TASK = "arith_mini"


def tasks_dir() -> Path:
    """The folder holding sample_smart's lm-eval task YAMLs."""
    return Path(__file__).resolve().parent
