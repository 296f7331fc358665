"""Benchmarks: speed and memory measured against the references in the same run (never timed tests)."""
