"""Scores candidate items for one user's history: the two-tower text score and the hybrid ranker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slm.apps.recommend.features import ItemStats, candidate_features
from slm.apps.recommend.ranker import HybridRanker
from slm.apps.recommend.towers import user_vectors


@dataclass
class Scorer:
    embeddings: np.ndarray  # (items, dim) unit-length item-tower embeddings
    matrix: np.ndarray  # (dim, dim) user tower
    max_history: int
    half_life: float
    stats: ItemStats | None = None
    numeric: np.ndarray | None = None  # (items, features)
    ranker: HybridRanker | None = None

    def user(self, history: np.ndarray) -> np.ndarray:
        """The unit-length user vector (zeros for an empty history)."""
        return user_vectors(
            [history], self.embeddings, self.matrix, max_history=self.max_history, half_life=self.half_life
        )[0]

    def text(self, history: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of the user vector with each item of ``rows`` (default: all)."""
        items = self.embeddings if rows is None else self.embeddings[rows]
        return items @ self.user(history)

    def features(self, history: np.ndarray, rows: np.ndarray, at: float) -> np.ndarray:
        assert self.stats is not None and self.numeric is not None
        return candidate_features(rows, self.text(history, rows), at, len(history), self.stats, self.numeric)

    def hybrid(self, history: np.ndarray, rows: np.ndarray, at: float) -> np.ndarray:
        """The second-stage ranker's score of each item of ``rows`` as of time ``at``."""
        assert self.ranker is not None
        return self.ranker.predict(self.features(history, rows, at))
