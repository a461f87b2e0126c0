"""Tuneloop training: recipes (one file per method), rounds, the runner and the Python SDK."""
