"""Whole-catalogue candidates: the ANN index's nearest items to the user vector, plus the popular ones.

The hybrid ranker then re-ranks this shortlist. Popular items join because the text tower alone
can miss what everyone is watching this month; the index alone serves brand-new items.
"""

from __future__ import annotations

import numpy as np

from slm.apps.common.index import VectorIndex
from slm.apps.recommend.scorer import Scorer

DEFAULT_RETRIEVE = 300
DEFAULT_POPULAR = 100


def shortlist(
    scorer: Scorer,
    index: VectorIndex,
    history: np.ndarray,
    at: float,
    *,
    exclude: set[int],
    pool: np.ndarray,
    retrieve: int = DEFAULT_RETRIEVE,
    popular: int = DEFAULT_POPULAR,
) -> np.ndarray:
    """Positions (into ``pool``, the item rows the index holds in order) of the candidates to re-rank."""

    def allowed(positions, limit: int) -> list[int]:
        return [int(p) for p in positions if p >= 0 and int(pool[p]) not in exclude][:limit]

    picked: list[int] = []
    if len(history) and retrieve:
        vector = scorer.user(history)
        if np.linalg.norm(vector) > 0:
            _, found = index.search(vector[None, :], min(len(pool), retrieve + len(exclude)))
            picked.extend(allowed(found[0], retrieve))
    if popular and scorer.stats is not None:
        counts = scorer.stats.count_before(pool, at)
        top = np.argsort(-counts, kind="stable")[: popular + len(exclude)]
        picked.extend(allowed([p for p in top if counts[p] > 0], popular))
    return np.array(list(dict.fromkeys(picked)), dtype=np.int64)
