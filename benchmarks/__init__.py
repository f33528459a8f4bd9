"""Benchmarks of sample_smart's processors and of the vLLM engine with them (see README.md)."""
