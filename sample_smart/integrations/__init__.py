"""Adapters to inference engines and eval harnesses.

Each submodule imports its engine (vllm, lm_eval, transformers) itself; importing this
package imports none of them.
"""
