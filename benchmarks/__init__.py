"""Throughput benchmarks: ``python -m benchmarks.run_all`` (``make bench``).

Each benchmark prints one JSON line with its figures and the ratios that matter; the machines this
runs on are noisy and shared, so every ratio compares two things measured side by side in one run.
"""
