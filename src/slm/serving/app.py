"""The FastAPI application: routes, error bodies and middleware around a :class:`ModelService`.

Each installed app adds its own routes and pages (:meth:`slm.serving.extensions.AppServer.add_routes`);
this module knows none of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Route
from starlette.types import Scope

from slm import __version__
from slm.serving import log
from slm.serving.batching import QueueFull, ShuttingDown
from slm.serving.config import ServeConfig
from slm.serving.drift_routes import install_drift
from slm.serving.extensions import RouteContext, app_servers, option_servers
from slm.serving.feedback import add_feedback_routes
from slm.serving.middleware import AccessLog, ApiKeys, BodyError, BodyLimit, BodyTimeout, ClientGone, InternalErrors
from slm.serving.responses import (
    ERRORS,
    ApiError,
    error_response,
    is_blank,
    json_response,
    overloaded,
    read_body,
    shutting_down,
)
from slm.serving.schemas import ErrorResponse, PredictRequest, PredictResponse, request_body_schema
from slm.serving.service import ModelService, ServedModel

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(service: ModelService, **attached: Any) -> FastAPI:
    """The HTTP API for ``service`` (already loaded); starting the app starts its batchers.

    ``attached``: the apps' start values by option name
    (:attr:`~slm.serving.extensions.AppServer.option`), e.g. ``monitor=`` an open monitor (/v1/monitor/* and the
    /monitor dashboard serve it) or ``recommender=`` a loaded recommender (/v1/recommend/rank ranks with
    it). Every app's routes are there either way; each app closes what it was given on shutdown.
    """
    config = service.config
    servers = option_servers(attached)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        log.event("ready", models=service.names)
        try:
            yield
        finally:
            await service.close()
            for option, value in attached.items():
                if value is not None:
                    await asyncio.to_thread(servers[option].close, value)
            log.event("stopped")

    app = FastAPIOffline(  # a FastAPI app whose /docs and /redoc assets come from a package, not a CDN
        title="slm",
        version=__version__,
        summary="Small, fast, domain-specific text models on a CPU.",
        lifespan=lifespan,
        # No /path/ -> /path redirect: Starlette builds its Location from the request's Host header, so
        # any client could make the server answer with a link to a site of its choosing.
        redirect_slashes=False,
    )
    _add_error_handlers(app)
    _add_routes(app, service)
    add_feedback_routes(app, service)  # POST /v1/models/{name}/feedback, recall of recent requests, expiry
    install_drift(app, service)  # watches every answered prediction; GET /v1/models/{name}/drift
    pages = {"/"}
    for name, server in app_servers().items():
        given = attached.get(server.option) if server.option is not None else None
        server.add_routes(RouteContext(app, service, given, service.groups.get(name), pages))
    # Added innermost first: a request meets AccessLog, then InternalErrors, CORS, API keys, the body limits.
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout=config.body_timeout)
    app.add_middleware(ApiKeys, config=config, pages=frozenset(pages))
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"])  # fmt: skip
    app.add_middleware(InternalErrors)
    app.add_middleware(AccessLog, metrics=service.metrics, enabled=config.access_log)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """JSON bodies for every refusal; an unexpected exception is :class:`InternalErrors`' (logged once)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(BodyError)
    async def _body(request: Request, exc: BodyError) -> JSONResponse:
        if isinstance(exc, ClientGone):  # not an error of the server's: no answer can reach the client
            log.event("client_disconnected", path=request.url.path, during="body")
        # A timed-out body may still be arriving: close the connection rather than read the rest.
        closing = {"Connection": "close"} if isinstance(exc, BodyTimeout) else None
        return error_response(exc.status, exc.code, str(exc.detail), closing)


def _add_routes(app: FastAPI, service: ModelService) -> None:
    config = service.config
    playground = files("slm.serving").joinpath("static/playground.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(playground)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Every model is loaded and warmed", responses={503: {"model": ErrorResponse}})
    async def readyz() -> JSONResponse:
        if not service.ready:
            return error_response(503, "not_ready", "the models are not loaded yet, or the server is shutting down")
        return JSONResponse({"status": "ready", "models": service.names})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=PROMETHEUS_TYPE)

    @app.get("/v1/models", summary="The served models, from their manifests")
    async def list_models() -> dict[str, Any]:
        return {"models": [model.summary() for model in service.served()]}

    @app.get("/v1/models/{name}", summary="One served model", responses={404: {"model": ErrorResponse}})
    async def one_model(name: str) -> dict[str, Any]:
        served = service.find(name)
        return served.summary() if served is not None else _model(service, name).summary()

    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        model = _model(service, name)
        if model.batcher.full:  # refuse before reading and parsing the body
            raise overloaded(service.metrics, name, QueueFull(model.batcher.retry_after()))
        body = await read_body(request, PredictRequest)
        texts, truncated = _checked_texts(body.inputs, config)
        request.state.log = {"model": name, "texts": len(texts)}
        try:
            predictions, version = await model.predict(texts, top_k=body.top_k or config.top_k,
                                                       with_probabilities=body.probabilities)  # fmt: skip
        except QueueFull as exc:
            raise overloaded(service.metrics, name, exc) from None
        except ShuttingDown:
            raise shutting_down(service.metrics, name) from None
        for index, prediction in enumerate(predictions):
            prediction["truncated"] = index in truncated
        service.observers.predicted(name, version.version, request.state.request_id, texts, predictions)
        latency = round((time.perf_counter() - started) * 1000, 3)
        return json_response({"model": name, "version": version.version, "request_id": request.state.request_id,
                              "predictions": predictions, "latency_ms": latency})  # fmt: skip

    path = "/v1/models/{name}/predict"
    # FastAPI documents the endpoint; Starlette's plain Route, matched first, answers it. It skips
    # FastAPI's per-request dependency machinery: measured 0.28 against 0.39 ms of server CPU per
    # request, on the hottest path.
    app.post(path, summary="Labels and probabilities for one text or a list", response_model=PredictResponse,
             responses=ERRORS, openapi_extra=request_body_schema())(predict)  # fmt: skip

    async def answer(request: Request) -> Response:
        return await predict(request.path_params["name"], request)

    app.router.routes.insert(0, _TaggedRoute(path, answer, methods=["POST"]))


class _TaggedRoute(Route):
    """A Starlette route that, like FastAPI's, puts itself in the scope (the access log reads its path)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _model(service: ModelService, name: str) -> ServedModel:
    model = service.get(name)
    if model is None:
        group = service.group_of(name)
        if group is not None:
            raise ApiError(404, "unknown_model", f"'{name}' is {group.usage(name)}")
        known = ", ".join(service.names)
        raise ApiError(404, "unknown_model", f"no model named '{name}' is served here (served: {known})")
    return model


def _checked_texts(texts: list[str], config: ServeConfig) -> tuple[list[str], set[int]]:
    """Refuse empty input and too many texts; cut or refuse texts over ``max_chars``."""
    if not texts:
        raise ApiError(422, "invalid_request", "texts: give at least one text")
    if len(texts) > config.max_texts:
        raise ApiError(422, "too_many_texts", f"texts: {len(texts)} texts, more than this server's limit of "
                       f"{config.max_texts} per request")  # fmt: skip
    out: list[str] = []
    truncated: set[int] = set()
    for index, text in enumerate(texts):
        if is_blank(text):
            where = "text" if len(texts) == 1 else f"texts.{index}"
            raise ApiError(422, "empty_text", f"{where}: the text is empty")
        if len(text) > config.max_chars:
            if config.long_texts == "reject":
                raise ApiError(422, "text_too_long", f"texts.{index}: {len(text):,} characters, more than this "
                               f"server's limit of {config.max_chars:,}")  # fmt: skip
            text = text[: config.max_chars]
            truncated.add(index)
        out.append(text)
    return out, truncated
