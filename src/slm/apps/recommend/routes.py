"""The recommender's HTTP side: POST /v1/recommend/rank and GET /v1/recommend.

Added to every server by :class:`slm.apps.recommend.server.RecommendServer`; they rank with the
recommender bundle the server was started with (``slm serve BUNDLE`` or ``slm app recommend serve
BUNDLE``), and answer 404 ``no_recommender`` without one. Ranking runs in a worker thread: item
embeddings are precomputed, so a request is a user vector, a shortlist or the given candidates, their
features and one LightGBM prediction.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from slm.errors import SlmError
from slm.serving.extensions import RouteContext
from slm.serving.responses import ApiError

if TYPE_CHECKING:
    from slm.apps.recommend.recommender import Recommender

ItemId = str | int


class RankRequest(BaseModel):
    """A known user (``user``) or the items a user liked (``liked``, oldest first); optional candidates."""

    model_config = ConfigDict(extra="forbid")

    user: ItemId | None = Field(None, description="A user id known to the bundle.", examples=["42"])
    liked: list[ItemId] | None = Field(None, max_length=1000, description="Item ids the user liked, oldest first.")
    candidates: list[ItemId] | None = Field(
        None, max_length=10_000, description="Item ids to rank (default: the whole catalogue via the ANN index)."
    )
    k: int = Field(10, ge=1, le=1000, description="How many items to return.")
    at: float | None = Field(
        None, description="Time of the request, seconds since the epoch (default: the data's last event)."
    )
    exclude_seen: bool = Field(True, description="Leave out items the user already interacted with.")


class RankedItem(BaseModel):
    item: str
    score: float
    text_score: float
    text: str


class RankResponse(BaseModel):
    items: list[RankedItem]
    source: str = Field(description="'candidates' (the request's) or 'catalogue' (ANN shortlist + popular items).")
    candidates: int
    history: int
    took_ms: float


def add_recommend_routes(context: RouteContext) -> None:
    """The /v1/recommend endpoints; each answers 404 ``no_recommender`` when none is served."""
    app = context.app
    recommender: Recommender | None = context.attached

    def need() -> Recommender:
        if recommender is None:
            raise ApiError(
                404, "no_recommender", "no recommender is served here (serve a bundle from 'slm app recommend train')"
            )
        return recommender

    @app.get("/v1/recommend", summary="The served recommender: items, users, base model, evaluation")
    async def describe() -> dict[str, Any]:
        current = need()
        manifest = current.manifest
        encoder = manifest.components.item_encoder
        return {
            "bundle": current.path.name,  # its folder's name: a path would tell clients about the server's disk
            "items": len(current.catalogue),
            "users": len(current.users),
            "base_model": manifest.base_model_name,
            "metrics": manifest.metrics,
            "item_encoder": None if encoder is None else encoder.precision,
        }

    @app.post(
        "/v1/recommend/rank", summary="Rank candidates (or the whole catalogue) for a user", response_model=RankResponse
    )
    async def rank(body: RankRequest) -> dict[str, Any]:
        current = need()
        if (body.user is None) == (body.liked is None):
            raise ApiError(422, "invalid_request", "give exactly one of 'user' (an id) or 'liked' (a list of item ids)")
        started = time.perf_counter()
        try:
            reply = await asyncio.to_thread(
                current.rank,
                user=None if body.user is None else str(body.user),
                liked=None if body.liked is None else [str(i) for i in body.liked],
                candidates=None if body.candidates is None else [str(i) for i in body.candidates],
                k=body.k,
                at=body.at,
                exclude_seen=body.exclude_seen,
            )
        except SlmError as exc:
            code = "unknown_user" if str(exc).startswith("unknown user") else "invalid_request"
            raise ApiError(404 if code == "unknown_user" else 422, code, str(exc)) from None
        return {**reply, "took_ms": round((time.perf_counter() - started) * 1000, 3)}
