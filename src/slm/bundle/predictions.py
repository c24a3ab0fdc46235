"""What a prediction looks like: a label (or labels), its score and every label's probability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Scores and probabilities are written rounded to 6 decimals: as integers, millionths.
MICRO = 1_000_000


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


@dataclass(frozen=True)
class Decoded:
    """A probability matrix's predictions as columns, what :func:`decode` gives row by row.

    ``micro[i, j]`` is ``round(float(proba[i, j]), 6)`` in millionths (exactly: ``micro / MICRO`` is that
    float); ``score`` the score of each row in millionths; ``top`` the index of each row's label
    (single-label) and ``chosen`` the labels over their thresholds (multi-label, else None).
    """

    micro: np.ndarray
    score: np.ndarray
    top: np.ndarray
    chosen: np.ndarray | None


def decode_columns(proba: np.ndarray, thresholds: np.ndarray | None) -> Decoded | None:
    """:func:`decode` as arrays, without a dict per row; None when a value is not a finite probability
    of at least 0 (NaN, or a negative zero after rounding: :func:`decode` handles those rows itself)."""
    values = np.asarray(proba)
    if values.ndim != 2 or not values.shape[1] or not np.isfinite(values).all() or (values < 0).any():
        return None
    scaled = values.astype(np.float64) * MICRO
    micro = np.rint(scaled)  # half to even, as round() is on a value exactly between two millionths
    # round(p, 6) rounds p's exact binary value. For float32 p, p * 1e6 is exact in float64 (24 + 14
    # significant bits), so rint agrees; a float64 p within rounding error of a half-millionth is rounded
    # by Python itself.
    near = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    if near.any():
        for i, j in zip(*np.nonzero(near), strict=True):
            micro[i, j] = round(round(float(values[i, j]), 6) * MICRO)
    micro = micro.astype(np.int64)
    if thresholds is None:
        top = values.argmax(axis=1)  # the first of equal maxima, as row.argmax()
        score = micro[np.arange(len(micro)), top]
        return Decoded(micro, score, top, None)
    # Rounding keeps order, so the rounded maximum is the maximum's rounding.
    return Decoded(micro, micro.max(axis=1), values.argmax(axis=1), values >= thresholds)
