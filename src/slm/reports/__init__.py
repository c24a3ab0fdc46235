"""Evaluation metrics, threshold tuning, the baseline-vs-transformer verdict and report files.

``plot_confusion`` and ``write_report`` are loaded on first use, so that importing the metrics
does not pull in matplotlib (or switch its backend to Agg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slm.reports.metrics import multi_label_metrics, primary_metric, single_label_metrics
from slm.reports.recommendation import recommend
from slm.reports.thresholds import tune_thresholds

if TYPE_CHECKING:
    from slm.reports.plots import plot_confusion
    from slm.reports.writers import write_report

__all__ = [
    "multi_label_metrics",
    "plot_confusion",
    "primary_metric",
    "recommend",
    "single_label_metrics",
    "tune_thresholds",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "plot_confusion":
        from slm.reports.plots import plot_confusion

        return plot_confusion
    if name == "write_report":
        from slm.reports.writers import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
