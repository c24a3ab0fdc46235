"""Text-based recommendation: a two-tower model on item text, a LightGBM ranker, leave-last-out evaluation.

``train_recommender`` writes a bundle; :class:`Recommender` ranks with it (no torch needed). Names
are imported on first use, so ``import slm.apps.recommend`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Catalogue": "catalogue",
    "RecData": "data",
    "RecommendConfig": "build",
    "Recommender": "recommender",
    "TowerTraining": "towers",
    "evaluate_bundle": "build",
    "load_catalogue": "data",
    "load_interactions": "data",
    "movielens": "data",
    "train_recommender": "build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"slm.apps.recommend.{_EXPORTS[name]}"), name)
