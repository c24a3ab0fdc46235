"""Scores candidate items for one user's history: the two-tower text score and the hybrid ranker."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from slm.apps.recommend.features import ItemStats, candidate_features
from slm.apps.recommend.ranker import HybridRanker
from slm.apps.recommend.towers import user_vectors

if TYPE_CHECKING:
    from slm.apps.recommend.split import Cases


class Ranker(Protocol):
    """A second-stage ranker: :class:`HybridRanker`, or a :class:`ColumnRanker` over some of its features."""

    feature_names: list[str]

    def predict(self, features: np.ndarray) -> np.ndarray: ...


@dataclass
class Scorer:
    embeddings: np.ndarray  # (items, dim) unit-length item-tower embeddings
    matrix: np.ndarray  # (dim, dim) user tower
    max_history: int
    half_life: float
    stats: ItemStats | None = None
    numeric: np.ndarray | None = None  # (items, features)
    ranker: Ranker | None = None
    plain: Scorer | None = None  # the same ranker without the text features (evaluation only)

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

    def without_text(self, queries: list[np.ndarray], labels: list[np.ndarray], seed: int) -> Scorer:
        """A copy whose ranker sees every feature but the text scores (the ablation baseline), fitted on ``queries``."""
        assert self.ranker is not None
        names = self.ranker.feature_names
        keep = [i for i, name in enumerate(names) if not name.startswith("text_")]
        plain, _ = HybridRanker.fit([q[:, keep] for q in queries], labels, [names[i] for i in keep], seed=seed)
        return replace(self, ranker=ColumnRanker(plain, keep, names))


class ColumnRanker:
    """A ranker fitted on some columns of the full feature matrix."""

    def __init__(self, ranker: HybridRanker, columns: list[int], feature_names: list[str]) -> None:
        self.ranker, self.columns, self.feature_names = ranker, columns, feature_names

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.ranker.predict(features[:, self.columns])


def ranker_queries(cases: Cases, scorer: Scorer, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One feature matrix and 0/1 label vector per case, the target at a random place among its negatives.

    (With the target always first, tied scores would rank it first too: LightGBM's early stopping
    then picks the first round, whose scores tie the most.)
    """
    rng = np.random.default_rng(seed)
    candidates = cases.candidates()
    features, labels = [], []
    for i in range(len(cases)):
        order = rng.permutation(candidates.shape[1])
        features.append(scorer.features(cases.histories[i], candidates[i][order], cases.times[i]))
        labels.append((order == 0).astype(np.float64))
    return features, labels
