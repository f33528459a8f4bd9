"""lm-eval ``!function`` hook of gsm8k_fewshot.yaml (see sample_smart.tasks.gsm8k)."""

from sample_smart.tasks.gsm8k import load_dataset  # noqa: F401 (the task YAML's !function hook, re-exported)
