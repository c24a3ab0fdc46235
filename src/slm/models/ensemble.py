"""Combine transformer and n-gram probabilities; the weight is chosen on validation data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over classes (single-label) or independent sigmoids (multi-label)."""
    logits = logits.astype(np.float64)
    if multi_label:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def combine(transformer: np.ndarray, ngram: np.ndarray, transformer_weight: float) -> np.ndarray:
    """Weighted average of two probability matrices of the same shape."""
    return (transformer_weight * transformer + (1.0 - transformer_weight) * ngram).astype(np.float32)


def tune_weight(
    transformer: np.ndarray,
    ngram: np.ndarray,
    score: Callable[[np.ndarray], float],
    tiebreak: Callable[[np.ndarray], float] | None = None,
    grid: np.ndarray | None = None,
) -> tuple[float, float]:
    """Transformer weight in [0, 1] maximising ``score(combined_probabilities)``.

    Equal scores (common on small validation sets) are broken by the higher ``tiebreak`` (e.g.
    negative log-loss), then by the larger transformer weight. Returns ``(weight, score)``.
    """
    grid = np.round(np.linspace(0.0, 1.0, 21), 2) if grid is None else grid
    best_w, best = 1.0, (-np.inf, -np.inf)
    for w in sorted(grid, reverse=True):
        combined = combine(transformer, ngram, float(w))
        key = (round(score(combined), 9), tiebreak(combined) if tiebreak else 0.0)
        if key > best:
            best_w, best = float(w), key
    return best_w, float(best[0])


def shift_priors(proba: np.ndarray, log_shift: np.ndarray | None) -> np.ndarray:
    """Re-weight class probabilities by ``exp(log_shift)`` and renormalise (single-label)."""
    if log_shift is None or not np.any(log_shift):
        return proba
    shifted = proba.astype(np.float64) * np.exp(np.asarray(log_shift, dtype=np.float64))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def tune_prior_shift(
    proba: np.ndarray,
    score: Callable[[np.ndarray], float],
    grid: np.ndarray | None = None,
    rounds: int = 2,
    min_gain: float = 0.002,
) -> np.ndarray:
    """Per-class log-prior shifts that raise ``score`` (e.g. macro-F1) on validation data.

    Coordinate ascent over a small grid. Returns zeros unless the gain exceeds ``min_gain``, so
    a shift is only kept when it clearly helps (it mainly pays off for imbalanced classes).
    """
    k = proba.shape[1]
    grid = np.round(np.linspace(-1.5, 1.5, 31), 2) if grid is None else grid
    shift = np.zeros(k)
    start = best = score(proba)
    for _ in range(rounds):
        for j in range(k):
            for value in grid:
                trial = shift.copy()
                trial[j] = value
                s = score(shift_priors(proba, trial))
                if s > best + 1e-9:
                    best, shift = s, trial
    return shift if best - start > min_gain else np.zeros(k)
