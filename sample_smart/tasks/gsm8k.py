"""GSM8K for the ``gsm8k_fewshot`` task: the hub dataset by default, local JSONL on request.

Source, in order:

1. ``data_dir`` (the task metadata key, set by ``sample-smart eval --data-dir DIR``), or
2. the environment variable ``SAMPLE_SMART_GSM8K_DIR``:
   a folder with ``train.jsonl`` and ``test.jsonl`` in the original GSM8K format
   (``{"question": ..., "answer": "...#### N"}``), read offline;
3. otherwise the hub dataset ``openai/gsm8k`` (config ``main``) through ``datasets``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_VAR = "SAMPLE_SMART_GSM8K_DIR"
HUB_PATH, HUB_NAME = "openai/gsm8k", "main"


def local_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local GSM8K folder to use, or None for the hub; checks both files exist."""
    chosen = explicit or os.environ.get(ENV_VAR) or None
    if chosen is None:
        return None
    folder = Path(chosen).expanduser()
    missing = [f for f in ("train.jsonl", "test.jsonl") if not (folder / f).is_file()]
    if missing:
        source = "data_dir" if explicit else ENV_VAR
        raise FileNotFoundError(f"{source}={str(chosen)!r}: missing {', '.join(missing)} (GSM8K JSONL files)")
    return folder


def load_dataset(data_dir: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` hook: ``DatasetDict`` with train and test splits."""
    import datasets

    folder = local_dir(data_dir)
    if folder is None:
        return datasets.load_dataset(HUB_PATH, HUB_NAME)
    files = {split: str(folder / f"{split}.jsonl") for split in ("train", "test")}
    return datasets.load_dataset("json", data_files=files)
