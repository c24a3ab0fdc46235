"""Per-label decision thresholds for multi-label classification."""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def default_grid() -> np.ndarray:
    """0.05, 0.10, ..., 0.95 (rounded so that 0.5 is exactly on the grid)."""
    return np.round(np.linspace(0.05, 0.95, 19), 6)


def _f1_per_threshold(y: np.ndarray, p: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of ``p >= t`` against binary ``y`` for every t in ``grid``."""
    pred = p[:, None] >= grid[None, :]
    pos = y[:, None].astype(bool)
    tp = (pred & pos).sum(axis=0)
    fp = (pred & ~pos).sum(axis=0)
    fn = (~pred & pos).sum(axis=0)
    denom = 2 * tp + fp + fn
    return np.divide(2.0 * tp, denom, out=np.zeros(grid.shape, dtype=float), where=denom > 0)


def _best_threshold(f1: np.ndarray, grid: np.ndarray) -> float:
    """Threshold with the highest F1; ties go to the one closest to 0.5 (then the lower one)."""
    tied = np.flatnonzero(np.isclose(f1, f1.max(), rtol=0.0, atol=1e-12))
    distance = np.abs(grid[tied] - DEFAULT_THRESHOLD)
    best = tied[np.lexsort((grid[tied], distance))[0]]
    return float(grid[best])


def tune_thresholds(y_true: np.ndarray, proba: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per-label threshold maximising that label's F1 on validation data.

    Labels without any positive example keep 0.5.
    """
    y_true = np.asarray(y_true) > 0
    proba = np.asarray(proba, dtype=float)
    if y_true.shape != proba.shape or proba.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and proba {proba.shape} must be the same (n, k) shape")
    grid = default_grid() if grid is None else np.asarray(grid, dtype=float).ravel()
    if grid.size == 0:
        raise ValueError("threshold grid is empty")
    out = np.full(proba.shape[1], DEFAULT_THRESHOLD)
    for j in range(proba.shape[1]):
        if y_true[:, j].any():
            out[j] = _best_threshold(_f1_per_threshold(y_true[:, j], proba[:, j], grid), grid)
    return out
