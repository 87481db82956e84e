"""Measurements, not tests: `python -m benchmarks.<name>` (see the README's Speed section)."""
