"""Text-based recommendation: a two-tower model on item text, a LightGBM ranker, leave-last-out evaluation.

``train_recommender`` writes a bundle; :class:`Recommender` ranks with it (no torch needed).
"""

from slm.apps.recommend.build import RecommendConfig, train_recommender
from slm.apps.recommend.data import Catalogue, RecData, load_catalogue, load_interactions, movielens
from slm.apps.recommend.recommender import Recommender
from slm.apps.recommend.towers import TowerTraining

__all__ = [
    "Catalogue",
    "RecData",
    "RecommendConfig",
    "Recommender",
    "TowerTraining",
    "load_catalogue",
    "load_interactions",
    "movielens",
    "train_recommender",
]
