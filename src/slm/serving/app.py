"""The FastAPI application: routes, error bodies and middleware around a :class:`ModelService`."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Route
from starlette.types import Scope

from slm import __version__
from slm.serving import log
from slm.serving.batching import QueueFull, ShuttingDown
from slm.serving.config import ServeConfig
from slm.serving.middleware import AccessLog, ApiKeys, BodyError, BodyLimit, BodyTimeout, ClientGone, InternalErrors
from slm.serving.monitor import add_monitor_routes
from slm.serving.recommend import add_recommend_routes
from slm.serving.schemas import (
    AnswerRequest,
    AnswerResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
    UnansweredResponse,
    request_body_schema,
    validation_message,
)
from slm.serving.service import ModelService, ServedModel
from slm.serving.support import ServedAssistant

if TYPE_CHECKING:
    from slm.apps.monitor.monitor import Monitor
    from slm.apps.recommend.recommender import Recommender

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)
}


class ApiError(Exception):
    """An answer other than 200: status, a stable ``code`` and a one-line message, sent as JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def json_response(data: Any) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), media_type="application/json")


def create_app(
    service: ModelService, *, monitor: Monitor | None = None, recommender: Recommender | None = None
) -> FastAPI:
    """The HTTP API for ``service`` (already loaded); starting the app starts its batchers.

    With a ``monitor`` (:class:`slm.apps.monitor.Monitor`), /v1/monitor/* and the /monitor
    dashboard serve it; the app closes it on shutdown. With a ``recommender``
    (:class:`slm.apps.recommend.Recommender`), /v1/recommend/rank ranks items with it.
    """
    config = service.config

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        log.event("ready", models=service.names)
        try:
            yield
        finally:
            await service.close()
            if monitor is not None:
                await asyncio.to_thread(monitor.close)
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
    _add_support_routes(app, service)
    add_monitor_routes(app, monitor, ApiError)
    add_recommend_routes(app, recommender, ApiError)
    # Added innermost first: a request meets AccessLog, then InternalErrors, CORS, API keys, the body limits.
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout=config.body_timeout)
    app.add_middleware(ApiKeys, config=config)
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
        assistant = service.assistant(name)
        return assistant.summary() if assistant is not None else _model(service, name).summary()

    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        model = _model(service, name)
        if model.batcher.full:  # refuse before reading and parsing the body
            raise _overloaded(service, name, QueueFull(model.batcher.retry_after()))
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            code, message = validation_message(exc)
            raise ApiError(400 if code == "invalid_json" else 422, code, message) from None
        texts, truncated = _checked_texts(body.inputs, config)
        request.state.log = {"model": name, "texts": len(texts)}
        try:
            predictions = await model.predict(texts, top_k=body.top_k or config.top_k,
                                              with_probabilities=body.probabilities)  # fmt: skip
        except QueueFull as exc:
            raise _overloaded(service, name, exc) from None
        except ShuttingDown:
            service.metrics.rejected.labels(name, "shutting_down").inc()
            raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"}) from None
        for index, prediction in enumerate(predictions):
            prediction["truncated"] = index in truncated
        latency = round((time.perf_counter() - started) * 1000, 3)
        return json_response({"model": name, "predictions": predictions, "latency_ms": latency})

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


def _add_support_routes(app: FastAPI, service: ModelService) -> None:
    """The support assistants: answer, the unanswered questions, the chat page."""
    config = service.config
    chat = files("slm.serving").joinpath("static/chat.html").read_text(encoding="utf-8")

    @app.get("/support", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(chat)

    async def answer(request: Request, name: str | None) -> Response:
        started = time.perf_counter()
        assistant = None if name is None else _assistant(service, name)
        if assistant is not None and assistant.batcher.full:  # refuse before reading and parsing the body
            raise _overloaded(service, assistant.name, QueueFull(assistant.batcher.retry_after()))
        try:
            body = AnswerRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            code, message = validation_message(exc)
            raise ApiError(400 if code == "invalid_json" else 422, code, message) from None
        if assistant is None:
            assistant = _assistant(service, body.assistant)
        elif body.assistant is not None and body.assistant != assistant.name:
            raise ApiError(422, "invalid_request", f"assistant: '{body.assistant}' differs from the URL's "
                           f"'{assistant.name}' (give one or the other)")  # fmt: skip
        question = _checked_question(body.question, config)
        conversation = body.conversation_id or uuid.uuid4().hex
        request.state.log = {"assistant": assistant.name, "conversation_id": conversation}
        try:
            reply = await assistant.answer(question, context=body.context, conversation_id=conversation)
        except QueueFull as exc:
            raise _overloaded(service, assistant.name, exc) from None
        except ShuttingDown:
            service.metrics.rejected.labels(assistant.name, "shutting_down").inc()
            raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"}) from None
        request.state.log.update(decision=reply["decision"], reason=reply["reason"])
        latency = round((time.perf_counter() - started) * 1000, 3)
        return json_response({"assistant": assistant.name, "conversation_id": conversation, **reply,
                              "latency_ms": latency})  # fmt: skip

    documented: dict[str, Any] = {"response_model": AnswerResponse, "responses": ERRORS,
                                  "openapi_extra": request_body_schema(AnswerRequest)}  # fmt: skip

    @app.post("/v1/support/answer", summary="A support assistant's answer to a question, with its decision path",
              **documented)  # fmt: skip
    async def answer_any(request: Request) -> Response:
        return await answer(request, None)

    @app.post("/v1/support/{name}/answer", summary="The named assistant's answer to a question", **documented)
    async def answer_named(name: str, request: Request) -> Response:
        return await answer(request, name)

    @app.get("/v1/support/unanswered", summary="The latest handed-off questions, for labelling",
             response_model=UnansweredResponse, responses={404: {"model": ErrorResponse}})  # fmt: skip
    async def unanswered(
        limit: int = Query(100, ge=1, le=1000, description="How many, newest first."),
        assistant: str | None = Query(None, description="Only this assistant's questions."),
    ) -> Response:
        if service.conversations is None:
            raise ApiError(404, "unknown_assistant", "no support assistant is served here")
        rows = await asyncio.to_thread(service.conversations.unanswered, limit=limit, assistant=assistant)
        for row in rows:
            row["predicted_intent"] = row.pop("intent")
        return json_response({"unanswered": rows})


def _overloaded(service: ModelService, name: str, full: QueueFull) -> ApiError:
    service.metrics.rejected.labels(name, "queue_full").inc()
    return ApiError(503, "overloaded", str(full), {"Retry-After": str(full.retry_after)})


def _model(service: ModelService, name: str) -> ServedModel:
    model = service.get(name)
    if model is None:
        if service.assistant(name) is not None:
            raise ApiError(404, "unknown_model", f"'{name}' is a support assistant, not a classification model: "
                           f"POST /v1/support/{name}/answer")  # fmt: skip
        known = ", ".join(service.names)
        raise ApiError(404, "unknown_model", f"no model named '{name}' is served here (served: {known})")
    return model


def _assistant(service: ModelService, name: str | None) -> ServedAssistant:
    """The assistant named ``name``; the only one served when ``name`` is None."""
    if name is None:
        if len(service.assistants) == 1:
            return next(iter(service.assistants.values()))
        if not service.assistants:
            raise ApiError(404, "unknown_assistant", "no support assistant is served here")
        raise ApiError(422, "invalid_request", "assistant: several assistants are served, name one of "
                       f"{', '.join(sorted(service.assistants))}")  # fmt: skip
    assistant = service.assistant(name)
    if assistant is None:
        served = ", ".join(sorted(service.assistants)) or "none"
        kind = " is a classification model, not a support assistant" if service.get(name) else " is not served here"
        raise ApiError(404, "unknown_assistant", f"assistant '{name}'{kind} (assistants: {served})")
    return assistant


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace, control (NUL...) or format characters (zero-width...).

    Stops at the first visible character, so an ordinary text costs one or two steps.
    """
    return all(char.isspace() or unicodedata.category(char) in ("Cc", "Cf") for char in text)


def _checked_question(question: str, config: ServeConfig) -> str:
    """Refuse a blank question or one over ``max_chars`` (never cut: a cut question changes its meaning)."""
    if is_blank(question):
        raise ApiError(422, "empty_text", "question: the question is empty")
    if len(question) > config.max_chars:
        raise ApiError(422, "text_too_long", f"question: {len(question):,} characters, more than this server's "
                       f"limit of {config.max_chars:,}")  # fmt: skip
    return question


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
