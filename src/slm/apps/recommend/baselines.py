"""Collaborative baselines, fitted on the split's training events: popularity and item-kNN.

Neither can score an item without training events: popularity gives it 0 and item-kNN a zero
similarity to everything, which is what the cold-start report shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse


class ItemKNN:
    """Item-based collaborative filtering: score(c) = sum over the user's liked items h of cos(h, c).

    Cosine between items over the binary user x item matrix of positive training events.
    """

    def __init__(self, events: pd.DataFrame, items: int) -> None:
        positive = events[events.positive].drop_duplicates(["user", "item"])
        users = pd.factorize(positive.user)[0]
        matrix = sparse.csc_matrix(
            (np.ones(len(positive), dtype=np.float32), (users, positive.item.to_numpy())),
            shape=(max(1, users.max() + 1 if len(users) else 1), items),
        )
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0))).ravel()
        self.matrix = (matrix @ sparse.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0))).tocsc()
        self.known = norms > 0

    def scores(self, history: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Scores of ``rows`` (default: every item) for a user who liked ``history``."""
        history = np.asarray(history, dtype=np.int64)
        profile = np.asarray(self.matrix[:, history].sum(axis=1)).ravel()
        target = self.matrix if rows is None else self.matrix[:, np.asarray(rows, dtype=np.int64)]
        return np.asarray(target.T @ profile).ravel()

    def scorable(self, rows: np.ndarray) -> float:
        """Share of ``rows`` that have at least one training event (the rest score 0 for everyone)."""
        return float(self.known[np.asarray(rows, dtype=np.int64)].mean()) if len(rows) else 0.0
