"""lm-eval ``!function`` hook of arith_mini.yaml: the generator lives in sample_smart.tasks.arith."""

from sample_smart.tasks.arith import load_dataset  # noqa: F401 (the task YAML's !function hook, re-exported)
