"""Backends: embedded (xllamacpp), tgi, sagemaker, echo (tests and benchmarks)."""
