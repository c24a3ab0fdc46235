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


def ensemble_probabilities(
    transformer: np.ndarray,
    ngram: np.ndarray | None,
    transformer_weight: float,
    log_shift: list[float] | np.ndarray | None = None,
) -> np.ndarray:
    """The shipped combination: weighted average, then the per-class prior shift.

    ``ngram`` may be None when ``transformer_weight`` is 1 (the n-gram model is then not needed).
    """
    if transformer_weight >= 1.0:
        combined = transformer
    elif ngram is None:
        raise ValueError(f"a transformer weight of {transformer_weight} needs the n-gram probabilities")
    else:
        combined = combine(transformer, ngram, transformer_weight)
    return shift_priors(combined, None if log_shift is None else np.asarray(log_shift))


def tune_weight(
    transformer: np.ndarray,
    ngram: np.ndarray,
    score: Callable[[np.ndarray], float],
    grid: np.ndarray | None = None,
) -> tuple[float, float]:
    """Transformer weight in [0, 1] maximising ``score(combined_probabilities)``.

    Small validation sets often give the same best score to a whole range of weights; then the
    middle of that range is taken, the choice least sensitive to where the range really ends.
    Returns ``(weight, score)``.
    """
    grid = np.round(np.linspace(0.0, 1.0, 21), 2) if grid is None else np.asarray(grid)
    scores = np.array([score(combine(transformer, ngram, float(w))) for w in grid])
    best = scores.max()
    tied = np.sort(grid[scores >= best - 1e-9])
    weight = float(tied[len(tied) // 2])
    return weight, float(best)


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
