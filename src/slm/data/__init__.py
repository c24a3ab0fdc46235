"""Data layer: load a labelled text file, report on it, split it.

The names below load on first use: ``slm predict`` on the ``[runtime]`` install reads its input through
:mod:`slm.data.stream`, which must not pull in pandas (the whole-file reader needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm.data.dataset import TextDataset
    from slm.data.loading import load_dataset
    from slm.data.report import DataReport
    from slm.data.splitting import align_labels, min_examples_per_class, split_dataset

_HOME = {
    "DataReport": "slm.data.report",
    "TextDataset": "slm.data.dataset",
    "align_labels": "slm.data.splitting",
    "load_dataset": "slm.data.loading",
    "min_examples_per_class": "slm.data.splitting",
    "split_dataset": "slm.data.splitting",
}
__all__ = [
    "DataReport",
    "TextDataset",
    "align_labels",
    "load_dataset",
    "min_examples_per_class",
    "split_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'slm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
