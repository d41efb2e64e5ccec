"""Benchmarks: measured side by side in one run, printed as ratios (``python -m benchmarks.X``).

Each module writes its own section of ``benchmarks/RESULTS.md`` (see :mod:`benchmarks.common`).
"""
