"""sample_smart: correctness-first decoding for LLMs ("Sample Smart, Not Hard", arXiv 2510.05987).

    from sample_smart import DecodeConfig, process
    out = process(logits, DecodeConfig.from_dict({"min_p": 0.1, "greedy_threshold": 0.3}))

The core (config, processors, calibration, traces) imports only torch, numpy and the
standard library; integrations with vLLM, lm-eval and transformers live in
``sample_smart.integrations`` and import their framework when used.
"""

from sample_smart.config import DecodeConfig
from sample_smart.processors import BatchState, process, process_core

__all__ = ["BatchState", "DecodeConfig", "process", "process_core"]
__version__ = "0.1.0"
