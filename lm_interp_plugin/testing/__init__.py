"""Tiny tokenizers and models built from configs, for tests, examples and benchmarks (nothing downloaded)."""
