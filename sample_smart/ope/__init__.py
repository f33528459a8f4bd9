"""Off-policy evaluation (OPE) of decoders over one model, from teacher-forced log-probabilities.

Phase 1 (:mod:`.prepare`): a logging decoder pi_0 samples responses (vLLM, token ids kept); every
response is teacher-forced once per distinct prompt (transformers, fp32, CPU, batch size 1) and each
target policy's **processed** log-probability of exactly those tokens is computed by one code path
(:mod:`.teacher_force`); the embedded model judges each answer (:mod:`.judge`). Phase 2
(:mod:`.analyze`): IPS, SNIPS, DR and the direct method (:mod:`.estimators`) with weight diagnostics
(:mod:`.diagnostics`), checked against an oracle (every target decoder actually run).

The core of this package (records, policies, estimators, diagnostics) imports numpy only; torch,
transformers and vLLM are imported inside the functions that need them.
"""
