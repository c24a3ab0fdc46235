"""What a prediction looks like: a label (or labels), its score and every label's probability."""

from __future__ import annotations

from typing import Any

import numpy as np


def decode(proba: np.ndarray, labels: list[str], thresholds: np.ndarray | None) -> list[dict[str, Any]]:
    """Turn a probability matrix into label predictions."""
    out = []
    for row in proba:
        probs = {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)}
        if thresholds is None:
            top = int(row.argmax())
            out.append({"label": labels[top], "score": float(row[top]), "probabilities": probs})
        else:
            chosen = [label for label, p, t in zip(labels, row, thresholds, strict=True) if p >= t]
            out.append({"label": chosen, "score": float(row.max()), "probabilities": probs})
    return out
