"""The recommend app's hooks into the server core: the ``recommender=`` start option and /v1/recommend.

A recommender bundle given to ``slm serve`` (found by its manifest's task) or to ``slm app recommend serve``
is loaded and warmed here before the server listens. Loaded through :mod:`slm.plugins`; cheap to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm.apps.recommend.layout import TASK
from slm.serving import log
from slm.serving.config import ServeConfig
from slm.serving.extensions import AppServer, RouteContext


class RecommendServer(AppServer):
    """``recommender=`` a bundle path: a loaded recommender behind /v1/recommend/rank and /v1/recommend."""

    option = "recommender"
    option_tasks = (TASK,)

    def open(self, value: Any, config: ServeConfig) -> Any:
        from slm.apps.recommend.recommender import Recommender

        ranking = Recommender(Path(value), threads=config.threads)
        if ranking.users:  # the first request should not pay for lazy initialisation
            ranking.rank(user=next(iter(ranking.users)), k=10)
        log.event("recommender_loaded", path=str(value), items=len(ranking.catalogue))
        return ranking

    def add_routes(self, context: RouteContext) -> None:
        from slm.apps.recommend.routes import add_recommend_routes

        add_recommend_routes(context)


SERVER = RecommendServer()
