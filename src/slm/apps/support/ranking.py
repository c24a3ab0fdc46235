"""Ranking metrics over ranked id lists and sets of correct (gold) ids."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from slm.errors import ConfigError


def _check(ranked_ids: Sequence[Sequence[str]], gold: Sequence[Collection[str]], k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if len(ranked_ids) != len(gold):
        raise ConfigError(f"{len(ranked_ids)} rankings but {len(gold)} gold sets; they must pair up")
    if not gold:
        raise ConfigError("no queries to evaluate")
    empty = [i for i, g in enumerate(gold) if not g]
    if empty:
        raise ConfigError(f"query {empty[0]} has no gold ids; every query needs at least one correct id")


def recall_at_k(ranked_ids: Sequence[Sequence[str]], gold: Sequence[Collection[str]], k: int) -> float:
    """Share of queries with at least one gold id among their first ``k`` ranked ids (hit rate @k)."""
    _check(ranked_ids, gold, k)
    hits = sum(1 for ranked, good in zip(ranked_ids, gold, strict=True) if any(r in good for r in ranked[:k]))
    return hits / len(gold)


def reciprocal_rank(ranked: Sequence[str], good: Collection[str], k: int = 10) -> float:
    """1 / rank of the first gold id within the first ``k`` (0 when none is there)."""
    for rank, item in enumerate(ranked[:k], start=1):
        if item in good:
            return 1.0 / rank
    return 0.0


def mrr(ranked_ids: Sequence[Sequence[str]], gold: Sequence[Collection[str]], k: int = 10) -> float:
    """Mean reciprocal rank of the first gold id, counting only the first ``k`` (MRR@k)."""
    _check(ranked_ids, gold, k)
    return sum(reciprocal_rank(r, g, k) for r, g in zip(ranked_ids, gold, strict=True)) / len(gold)
