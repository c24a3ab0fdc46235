"""The second-stage ranker: LightGBM's LambdaRank over the text score and the other features."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from slm.errors import BundleError, ConfigError

DEFAULT_ROUNDS = 400
PATIENCE = 50  # rounds without a better NDCG@10 on the held-out queries before stopping


def _lightgbm():
    try:
        import lightgbm
    except ImportError as exc:
        raise ConfigError("the recommender's ranker needs lightgbm: pip install 'slm[recommend]'") from exc
    return lightgbm


class HybridRanker:
    """Scores candidate feature rows; higher is better. Saved as LightGBM's own text format."""

    def __init__(self, booster, feature_names: list[str]) -> None:
        self.booster = booster
        self.feature_names = list(feature_names)
        self._lock = threading.Lock()  # one prediction at a time: the server ranks from several threads

    @classmethod
    def fit(
        cls,
        queries: list[np.ndarray],
        labels: list[np.ndarray],
        feature_names: list[str],
        *,
        rounds: int = DEFAULT_ROUNDS,
        seed: int = 42,
        threads: int = 2,
    ) -> tuple[HybridRanker, dict]:
        """Fit on candidate lists (one feature matrix and 0/1 label vector per user).

        20% of the lists, held out, choose the number of rounds (early stopping); then the model is
        fitted again on every list for that many rounds.
        """
        lgb = _lightgbm()
        if len(queries) < 10:
            raise ConfigError(f"the ranker needs at least 10 validation users, got {len(queries)}")
        order = np.random.default_rng(seed).permutation(len(queries))
        held = set(order[: max(2, len(queries) // 5)].tolist())

        def dataset(chosen: list[int], reference=None):
            return lgb.Dataset(
                np.vstack([queries[i] for i in chosen]),
                np.concatenate([labels[i] for i in chosen]),
                group=[len(queries[i]) for i in chosen],
                feature_name=feature_names,
                reference=reference,
                free_raw_data=True,
            )

        train = dataset([i for i in range(len(queries)) if i not in held])
        valid = dataset(sorted(held), reference=train)
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": 0.05,
            "num_leaves": 7,
            "min_data_in_leaf": 100,
            "feature_fraction": 0.9,
            "lambdarank_truncation_level": 20,
            "num_threads": threads,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        probe = lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid],
                          callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])  # fmt: skip
        best = max(1, probe.best_iteration or rounds)
        # The held-out queries chose the number of rounds; the final model learns from every query.
        booster = lgb.train(params, dataset(list(range(len(queries)))), num_boost_round=best)
        report = {
            "queries": len(queries),
            "early_stopping_queries": len(held),
            "rounds": int(best),
            "early_stopping_ndcg@10": round(float(probe.best_score["valid_0"]["ndcg@10"]), 4),
            "importance": dict(zip(feature_names, booster.feature_importance("gain").round(1).tolist(), strict=True)),
        }
        return cls(booster, feature_names), report

    def predict(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != len(self.feature_names):
            raise ConfigError(f"the ranker takes {len(self.feature_names)} features, got {features.shape[1]}")
        with self._lock:
            return self.booster.predict(features, num_threads=1)

    def save(self, path: Path) -> None:
        self.booster.save_model(str(path))

    @classmethod
    def load(cls, path: Path, feature_names: list[str]) -> HybridRanker:
        lgb = _lightgbm()
        try:
            booster = lgb.Booster(model_file=str(path))
        except Exception as exc:  # lightgbm raises its own LightGBMError
            raise BundleError(f"{path}: the ranker is unreadable: {exc}") from None
        if booster.feature_name() != list(feature_names):
            raise BundleError(f"{path}: the ranker's features {booster.feature_name()} are not the manifest's")
        return cls(booster, feature_names)
