"""``slm bench``: speed, size, memory and accuracy of model variants, side by side and interleaved.

``run_benchmark`` is the entry point; ``pareto_front`` is the helper the plot uses. Both are
imported on first use so that ``slm.benchmark.isolated`` (the worker scripts) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pareto_front", "run_benchmark"]


def __getattr__(name: str) -> Any:
    if name == "run_benchmark":
        from slm.benchmark.harness import run_benchmark

        return run_benchmark
    if name == "pareto_front":
        from slm.benchmark.report import pareto_front

        return pareto_front
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
