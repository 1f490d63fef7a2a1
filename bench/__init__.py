"""Benchmarks: run as modules (``python -m bench.NAME``), each prints a table with ratios."""
