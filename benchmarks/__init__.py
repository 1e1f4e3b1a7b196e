"""Benchmarks: run from the checkout as `python -m benchmarks.NAME` (they import tests.support)."""
