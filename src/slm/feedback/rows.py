"""What one feedback row may say, checked the same way for an HTTP body and a file row (no SQLAlchemy here:
reading a corrections file needs none)."""

from __future__ import annotations

import uuid
from typing import Any

VERDICTS = ("correct", "wrong", "unsure")
DEFAULT_RETENTION = "90d"  # texts are personal data: every stored row expires
# Columns an incoming row is compared on when its id is stored already (created_at is when, not what).
CONTENT = ("model", "version", "request_id", "text", "predicted", "label", "verdict", "note", "user_id")
MAX_ID, MAX_LABEL, MAX_NOTE, MAX_USER = 128, 200, 2000, 200
Row = dict[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


def settle(predicted: str | None, label: str | None, verdict: str | None) -> tuple[str | None, str | None, str | None]:
    """``(predicted, label, verdict)`` made consistent, or ValueError saying what contradicts what.

    A label that differs from the predicted one means the model was wrong, an equal one that it was right;
    "correct" with no label means the predicted label is the correct one. A label with neither a predicted
    label nor a verdict is stored with no verdict: a labelled text that says nothing about the model.
    """
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if label is None and verdict is None:
        raise ValueError("give the correct label, a verdict (correct, wrong, unsure), or both")
    if verdict is None:
        verdict = None if predicted is None else "correct" if label == predicted else "wrong"
    elif verdict == "correct":
        if label is None and predicted is None:
            raise ValueError("verdict 'correct' needs the label the model gave (predicted) or the correct label")
        if label is not None and predicted is not None and label != predicted:
            raise ValueError(f"the verdict is 'correct' but the label {label!r} differs from predicted {predicted!r}")
        label = predicted = label or predicted
    elif verdict == "wrong" and label is not None and label == predicted:
        raise ValueError(f"the verdict is 'wrong' but the label {label!r} is the predicted one")
    return predicted, label, verdict


def same_content(stored: Row, incoming: Row) -> bool:
    """Whether ``incoming`` says what ``stored`` says: every field it gives (not None) is equal.

    A field left out is not a difference: an exported row imported again (it has no note) repeats the
    row the server stored, and a retried request after its text left the recall buffer repeats it too.
    """
    return all(incoming.get(name) is None or incoming.get(name) == stored.get(name) for name in CONTENT)
