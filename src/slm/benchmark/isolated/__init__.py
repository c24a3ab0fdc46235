"""Standalone scripts for the benchmark workers: no slm imports, runnable in another virtual environment."""
