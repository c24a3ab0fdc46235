"""Ranking metrics of one held-out item per case: HR@k, NDCG@k and MRR, with random tie-breaking.

A method that gives the target and some candidates the same score (popularity on never-seen
items, say) gets a uniformly random place among them, so a constant score earns exactly the
random baseline: ties never flatter a method.
"""

from __future__ import annotations

import numpy as np

K = 10


def target_ranks(scores: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of each row's target (column ``target[i]``) in ``scores`` (cases, candidates); -inf is excluded."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    mine = scores[rows, target][:, None]
    higher = (scores > mine).sum(axis=1)
    ties = (scores == mine).sum(axis=1) - 1
    return higher + np.array([rng.integers(0, t + 1) for t in ties], dtype=np.int64)


def summarize(ranks: np.ndarray, k: int = K) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank+2) inside the top k) and MRR over cases."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not len(ranks):
        return {f"hr@{k}": float("nan"), f"ndcg@{k}": float("nan"), "mrr": float("nan"), "cases": 0}
    hit = ranks < k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
        "mrr": float((1.0 / (ranks + 1.0)).mean()),
        "cases": len(ranks),
    }


def random_expectation(candidates: int, k: int = K) -> dict[str, float]:
    """The expected metrics of a random ranking of ``candidates`` items (one of them relevant)."""
    ranks = np.arange(candidates, dtype=np.float64)
    top = ranks[:k]
    return {
        f"hr@{k}": min(k, candidates) / candidates,
        f"ndcg@{k}": float((1.0 / np.log2(top + 2.0)).sum() / candidates),
        "mrr": float((1.0 / (ranks + 1.0)).mean()),
    }
