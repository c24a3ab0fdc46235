"""Leave-last-out evaluation of the recommender beside its baselines, on the same cases in one run.

Warm cases rank the held-out item among 100 sampled never-seen items and among the whole warm
catalogue; cold cases rank a held-out cold item among 100 other cold items. Methods: random,
popularity and item-kNN (fitted on the split's training events), the un-fine-tuned encoder, the
fine-tuned two-tower text model, the hybrid ranker (text + features), and the same ranker fitted
without the text scores (``features_only``: what the features earn without the language model).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from rich.progress import track

from slm.apps.common.index import VectorIndex
from slm.apps.recommend.baselines import ItemKNN
from slm.apps.recommend.metrics import K, random_expectation, summarize, target_ranks
from slm.apps.recommend.retrieval import shortlist
from slm.apps.recommend.scorer import Scorer, ranker_queries
from slm.apps.recommend.split import Cases, Split
from slm.console import console

log = logging.getLogger(__name__)

METHODS = ("random", "popularity", "item_knn", "untuned_encoder", "two_tower", "features_only", "hybrid")
COLLABORATIVE = ("popularity", "item_knn")
BOOTSTRAP_ROUNDS = 2000


def _method_scores(name: str, history, rows, at, scorer: Scorer, untuned: Scorer, knn: ItemKNN) -> np.ndarray:
    if name == "features_only":
        assert scorer.plain is not None  # evaluate() fits it first
        return scorer.plain.hybrid(history, rows, at)
    if name == "random":
        return np.zeros(len(rows))
    if name == "popularity":
        assert scorer.stats is not None  # a trained scorer has the item statistics
        return scorer.stats.features(rows, at)["log_popularity"]
    if name == "item_knn":
        return knn.scores(history, rows)
    if name == "untuned_encoder":
        return untuned.text(history, rows)
    if name == "two_tower":
        return scorer.text(history, rows)
    return scorer.hybrid(history, rows, at)


def sampled(
    cases: Cases,
    scorer: Scorer,
    untuned: Scorer,
    knn: ItemKNN,
    methods,
    seed: int,
    label: str,
    ranks: dict[str, np.ndarray] | None = None,
) -> dict:
    """Metrics of each method ranking every case's target among its sampled negatives (``ranks``: filled per case)."""
    candidates = cases.candidates()
    results = {}
    for name in methods:
        rng = np.random.default_rng(seed)
        scores = np.array(
            [
                _method_scores(name, cases.histories[i], candidates[i], cases.times[i], scorer, untuned, knn)
                for i in range(len(cases))
            ]
        ).reshape(candidates.shape)
        places = target_ranks(scores, np.zeros(len(cases), dtype=np.int64), rng)
        if ranks is not None:
            ranks[name] = places
        results[name] = summarize(places)
        log.info(f"  {label} {name}: NDCG@{K} {results[name][f'ndcg@{K}']:.4f}")
    return results


def full_catalogue(
    cases: Cases,
    split: Split,
    scorer: Scorer,
    untuned: Scorer,
    knn: ItemKNN,
    methods,
    seed: int,
    index_kind: str,
    show_progress: bool = True,
) -> dict:
    """Metrics of each method ranking every case's target among all warm items the user had not seen."""
    index = VectorIndex.build(scorer.embeddings[split.warm_items], kind=index_kind)
    ranks: dict[str, list[int]] = {name: [] for name in (*methods, "hybrid_served")}
    rngs = {name: np.random.default_rng(seed) for name in ranks}
    cases_seen: Iterable[int] = range(len(cases))
    if show_progress:
        cases_seen = track(cases_seen, description="full-catalogue ranking", console=console, transient=True)
    for i in cases_seen:
        seen = set(cases.seen[i].tolist()) - {int(cases.targets[i])}
        rows = split.warm_items[~np.isin(split.warm_items, list(seen))]
        target = int(np.flatnonzero(rows == cases.targets[i])[0])
        history, at = cases.histories[i], cases.times[i]
        for name in methods:
            scores = _method_scores(name, history, rows, at, scorer, untuned, knn)
            ranks[name].append(int(target_ranks(scores[None, :], np.array([target]), rngs[name])[0]))
        picked = split.warm_items[shortlist(scorer, index, history, at, exclude=seen, pool=split.warm_items)]
        scores = np.full(len(rows), -np.inf)
        position = {int(r): j for j, r in enumerate(rows)}
        chosen = np.array([position[int(r)] for r in picked if int(r) in position], dtype=np.int64)
        if len(chosen):
            scores[chosen] = scorer.hybrid(history, rows[chosen], at)
        ranks["hybrid_served"].append(int(target_ranks(scores[None, :], np.array([target]), rngs["hybrid_served"])[0]))
    return {name: summarize(np.array(values)) for name, values in ranks.items()}


def evaluate(
    split: Split,
    scorer: Scorer,
    untuned: Scorer,
    knn: ItemKNN,
    *,
    seed: int = 42,
    index_kind: str = "hnsw",
    full: bool = True,
    show_progress: bool = True,
) -> dict:
    """Every metric of the recommender and its baselines on ``split`` (see the module docstring)."""
    negatives = split.test.negatives.shape[1]
    scorer.plain = scorer.without_text(*ranker_queries(split.validation, scorer, seed), seed)
    log.info(f"evaluating on {len(split.test):,} warm and {len(split.cold):,} cold cases…")
    report = {
        "k": K,
        "sampled_candidates": negatives + 1,
        "random_expected": random_expectation(negatives + 1),
    }
    warm_ranks: dict[str, np.ndarray] = {}
    report["warm_sampled"] = sampled(split.test, scorer, untuned, knn, METHODS, seed, "warm", warm_ranks)
    if len(split.cold):
        cold_rows = split.cold.candidates().ravel()
        assert scorer.stats is not None  # a trained scorer has the item statistics
        report["cold_sampled"] = sampled(split.cold, scorer, untuned, knn, METHODS, seed, "cold")
        report["cold_scorable"] = {
            "item_knn": knn.scorable(cold_rows),
            "popularity": float((scorer.stats.count_before(cold_rows, np.inf) > 0).mean()),
            "two_tower": 1.0,
        }
    if full:
        report["warm_full_catalogue"] = full_catalogue(
            split.test, split, scorer, untuned, knn, METHODS, seed, index_kind, show_progress
        )
        report["full_catalogue_items"] = len(split.warm_items)
    report["acceptance"] = acceptance(report, warm_ranks, seed)
    return report


def ndcg_per_case(ranks: np.ndarray, k: int = K) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def gain_interval(ranks: np.ndarray, baseline: np.ndarray, seed: int, rounds: int = BOOTSTRAP_ROUNDS) -> list[float]:
    """95% paired-bootstrap interval of the relative NDCG@K gain of ``ranks`` over ``baseline`` (same cases)."""
    mine, theirs = ndcg_per_case(ranks), ndcg_per_case(baseline)
    picks = np.random.default_rng(seed).integers(0, len(mine), size=(rounds, len(mine)))
    gains = mine[picks].mean(axis=1) / np.maximum(theirs[picks].mean(axis=1), 1e-12) - 1.0
    return [round(float(q), 4) for q in np.percentile(gains, [2.5, 97.5])]


def acceptance(report: dict, warm_ranks: dict[str, np.ndarray] | None = None, seed: int = 42) -> dict:
    """The two quality targets: hybrid vs the collaborative baselines (warm), text model vs random (cold)."""
    warm = report["warm_sampled"]
    best = max(COLLABORATIVE, key=lambda name: warm[name][f"ndcg@{K}"])
    gain = warm["hybrid"][f"ndcg@{K}"] / max(warm[best][f"ndcg@{K}"], 1e-12) - 1.0
    out = {
        "warm_best_collaborative": best,
        "warm_hybrid_relative_gain": round(gain, 4),
        "warm_target_relative_gain": 0.10,
        "warm_met": gain >= 0.10,
    }
    if warm_ranks:
        out["warm_gain_95_interval"] = gain_interval(warm_ranks["hybrid"], warm_ranks[best], seed)
    if "cold_sampled" in report:
        ratio = report["cold_sampled"]["two_tower"][f"hr@{K}"] / report["random_expected"][f"hr@{K}"]
        out.update(cold_text_vs_random=round(ratio, 3), cold_target_ratio=2.0, cold_met=ratio >= 2.0)
    return out
