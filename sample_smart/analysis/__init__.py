"""Evaluation metrics and confidence-versus-correctness studies (no vllm/lm_eval imports).

* :mod:`.metrics`: exact match, maj@k, pass@k (unbiased), share correct, distinct answers;
* :mod:`.studies`: accuracy vs low-confidence tokens, by mean rank, confidence-conditioned
  votes, maj@k per confidence bin (arXiv 2510.05987, section 5);
* :mod:`.plots`: their figures (matplotlib Agg).
"""

from .metrics import extract_answer, maj_at_k, majority_answer, normalize_answer, pass_at_k, question_metrics, summarize

__all__ = [
    "extract_answer",
    "maj_at_k",
    "majority_answer",
    "normalize_answer",
    "pass_at_k",
    "question_metrics",
    "summarize",
]
