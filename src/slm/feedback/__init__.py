"""Feedback on a served model's answers: stored (:mod:`slm.feedback.store`), imported and exported as files
(:mod:`slm.feedback.files`), and read back for training (:func:`read_feedback`).

The names below load on first use: reading a corrections file needs no SQLAlchemy (the serve extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm.feedback.records import FeedbackRecord, read_feedback
    from slm.feedback.store import FeedbackStore

__all__ = ["FeedbackRecord", "FeedbackStore", "read_feedback"]

_HOME = {
    "FeedbackRecord": "slm.feedback.records",
    "read_feedback": "slm.feedback.records",
    "FeedbackStore": "slm.feedback.store",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'slm.feedback' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
