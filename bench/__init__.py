"""Benchmarks: `python -m bench.run_all [--quick]` (make bench / make bench-quick); see docs/BENCHMARKS.md."""
