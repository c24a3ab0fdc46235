"""``POST /v1/models/{name}/feedback``: a user says whether a prediction was right, and what the right label is.

A feedback names the text it is about by the ``request_id`` of the predict answer (recalled from memory:
:mod:`slm.serving.recall`) or sends the ``text`` itself. It is stored in the feedback database
(:class:`slm.feedback.store.FeedbackStore`: ``--feedback-db``, SQLite by default, created on the first
feedback), idempotently on the client's ``id``, and every observer hears of it (the drift signals count the
error rate). Stored rows expire after ``--feedback-retention``: purged when the server starts and every
hour while it runs. Texts never go into the logs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slm.errors import ConfigError
from slm.serving import log
from slm.serving.config import ServeConfig
from slm.serving.periodic import purge_interval, repeat_while_running
from slm.serving.recall import RecentPredictions
from slm.serving.responses import ERRORS, ApiError, is_blank, read_body
from slm.serving.schemas import ErrorResponse, request_body_schema
from slm.serving.service import ModelService

if TYPE_CHECKING:
    from slm.feedback.store import FeedbackStore

PATH = "/v1/models/{name}/feedback"
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class FeedbackRequest(BaseModel):
    """A verdict on one prediction; strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, pattern=ID_PATTERN, description="Your id for this feedback: sending it again "
                           "is harmless (idempotency key). Default: the server makes one.")  # fmt: skip
    request_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="The predict answer's request_id (recent requests are recalled).",
    )
    text: str | None = Field(None, description="The text, when the request is not named or no longer recalled.")
    index: int = Field(0, ge=0, le=100_000, description="Which text of a multi-text request (default the first).")
    predicted: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The label the model gave (known already for a recalled request).",
    )
    label: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The correct label; a label the model does not know yet is welcome.",
    )
    verdict: Literal["correct", "wrong", "unsure"] | None = Field(
        None, description="Whether the predicted label was right; a label that differs from it implies 'wrong'."
    )
    note: str | None = Field(None, max_length=2000, description="Free text for whoever reviews the feedback.")
    user_id: str | None = Field(None, min_length=1, max_length=200, description="Who gave the feedback.")

    @model_validator(mode="after")
    def _enough(self) -> FeedbackRequest:
        if self.request_id is None and self.text is None:
            raise ValueError("give the request_id of the prediction or its text")
        if self.label is None and self.verdict is None:
            raise ValueError("give the correct label, a verdict (correct, wrong, unsure), or both")
        for name in ("label", "predicted", "user_id"):
            value = getattr(self, name)
            if value is not None and is_blank(value):
                raise ValueError(f"{name} is empty")
        return self


class FeedbackResponse(BaseModel):
    id: str = Field(description="The stored feedback's id (yours, or the one the server made).")
    model: str
    version: str | None = Field(description="The bundle version that made the prediction, when known.")
    verdict: str | None
    label: str | None
    duplicate: bool = Field(False, description="True when this id was stored already with the same content.")


class FeedbackSink:
    """The feedback database of one server, opened on first use (a server that gets no feedback makes none)."""

    def __init__(self, config: ServeConfig) -> None:
        from slm.storage.sql import absolute_database_url

        self.url = absolute_database_url(config.feedback_db)
        self.retention = config.feedback_retention
        self.redact = config.redact_stored
        self._store: FeedbackStore | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        """Whether there is a database to purge: any server by URL, a SQLite file once made."""
        from slm.storage.sql import sqlite_file

        path = sqlite_file(self.url)
        return self._store is not None or path is None or path.exists()

    def store(self) -> FeedbackStore:
        with self._lock:
            if self._store is None:
                from slm.feedback.store import FeedbackStore
                from slm.privacy import Redactor

                self._store = FeedbackStore.open(self.url, redactor=Redactor() if self.redact else None)
            return self._store

    def purge(self) -> int:
        """Delete expired rows (if there is a database); how many went."""
        if not self.exists():
            return 0
        removed = self.store().purge(self.retention)
        if removed:
            log.event("feedback_purged", rows=removed, retention_days=round(self.retention / 86400, 3))
        return removed

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def add_feedback_routes(app: FastAPI, service: ModelService) -> None:
    """The feedback endpoint on ``app``; with feedback on, recall of recent requests and the expiry of old rows.

    Purges expired rows now (an unreachable ``--feedback-db`` server is a one-line ConfigError before the
    port opens), then hourly while the app runs (:func:`slm.serving.periodic.repeat_while_running`).
    """
    config = service.config
    if not config.feedback:
        _add_route(app, service, None, None)
        return
    recent = RecentPredictions(max_bytes=int(config.feedback_recall_mb * 1_000_000),
                               max_age_s=config.feedback_recall_seconds)  # fmt: skip
    service.observers.add(recent)
    sink = FeedbackSink(config)
    sink.purge()
    _add_route(app, service, sink, recent)
    repeat_while_running(app, purge_interval(sink.retention), sink.purge, name="feedback_purge", on_close=sink.close)


def _add_route(
    app: FastAPI, service: ModelService, sink: FeedbackSink | None, recent: RecentPredictions | None
) -> None:
    responses: dict[int | str, dict[str, Any]] = {**ERRORS, 409: {"model": ErrorResponse}}

    @app.post(PATH, summary="Say whether a prediction was right, and the correct label", status_code=201,
              response_model=FeedbackResponse, responses=responses,
              openapi_extra=request_body_schema(FeedbackRequest))  # fmt: skip
    async def feedback(name: str, request: Request) -> Response:
        if sink is None or recent is None:
            raise ApiError(404, "feedback_disabled", "this server does not take feedback (started with "
                           "--no-feedback)")  # fmt: skip
        _check_model(service, name)
        body = await read_body(request, FeedbackRequest)
        request.state.log = {"model": name}
        row = _row(name, body, recent, service.config)
        if row is None:  # the request is no longer recalled and no text was sent
            return await _repeat_or_unknown(sink, name, body)
        outcome = await _store(sink, row)
        request.state.log["feedback"] = outcome
        if outcome == "conflict":
            raise ApiError(409, "id_conflict", f"id {row['id']!r} is stored already with other content; send "
                           "new feedback under a new id")  # fmt: skip
        if outcome == "inserted":
            correct = {"correct": True, "wrong": False}.get(row["verdict"])
            service.observers.corrected(name, row["version"], correct)
        return _answer(row, duplicate=outcome == "duplicate")


def _check_model(service: ModelService, name: str) -> None:
    if service.get(name) is None:
        known = ", ".join(sorted(service.models)) or "none"
        raise ApiError(404, "unknown_model", f"no classification model named '{name}' is served here "
                       f"(served: {known})")  # fmt: skip


def _row(name: str, body: FeedbackRequest, recent: RecentPredictions, config: ServeConfig) -> dict[str, Any] | None:
    """The row to store, settled (verdict from the labels); None when the request must be looked up as a repeat."""
    from slm.feedback.rows import new_id, settle

    text, predicted, version = _text(body, config), body.predicted, None
    recalled = recent.recall(name, body.request_id) if body.request_id is not None else None
    if recalled is not None:
        if body.index >= len(recalled.texts):
            raise ApiError(422, "invalid_request", f"index: request {body.request_id} had "
                           f"{len(recalled.texts)} text(s), there is no index {body.index}")  # fmt: skip
        if text is not None and text != recalled.texts[body.index]:
            raise ApiError(422, "invalid_request", f"text: differs from the text of request {body.request_id}")
        served = recalled.labels[body.index]
        if predicted is not None and served is not None and predicted != served:
            raise ApiError(422, "invalid_request", f"predicted: request {body.request_id} was answered "
                           f"{served!r}, not {predicted!r}")  # fmt: skip
        text, predicted, version = recalled.texts[body.index], served or predicted, recalled.version
    if text is None:
        return None
    try:
        predicted, label, verdict = settle(predicted, body.label, body.verdict)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return {"id": body.id or new_id(), "model": name, "version": version, "request_id": body.request_id,
            "text": text, "predicted": predicted, "label": label, "verdict": verdict, "note": body.note,
            "user_id": body.user_id, "created_at": time.time()}  # fmt: skip


def _text(body: FeedbackRequest, config: ServeConfig) -> str | None:
    """The body's text, checked as predict checks one (cut or refused past --max-chars)."""
    text = body.text
    if text is None:
        return None
    if is_blank(text):
        raise ApiError(422, "empty_text", "text: the text is empty")
    if len(text) > config.max_chars:
        if config.long_texts == "reject":
            raise ApiError(422, "text_too_long", f"text: {len(text):,} characters, more than this server's "
                           f"limit of {config.max_chars:,}")  # fmt: skip
        text = text[: config.max_chars]
    return text


async def _repeat_or_unknown(sink: FeedbackSink, name: str, body: FeedbackRequest) -> Response:
    """A request id no longer recalled and no text: a retry of stored feedback (same id) is still a duplicate."""
    from slm.feedback.rows import same_content

    stored = await _call(sink, lambda store: store.get(body.id)) if body.id is not None and sink.exists() else None
    if stored is None:
        raise ApiError(404, "unknown_request", f"request {body.request_id} to '{name}' is not recalled (unknown, "
                       "or answered too long ago): send the text with the feedback")  # fmt: skip
    given = {"model": name, "request_id": body.request_id, "predicted": body.predicted, "label": body.label,
             "verdict": body.verdict, "note": body.note, "user_id": body.user_id}  # fmt: skip
    if not same_content(stored, await _call(sink, lambda store: store.redacted(given))):
        raise ApiError(409, "id_conflict", f"id {body.id!r} is stored already with other content; send new "
                       "feedback under a new id")  # fmt: skip
    return _answer(stored, duplicate=True)


async def _store(sink: FeedbackSink, row: dict[str, Any]) -> str:
    return str(await _call(sink, lambda store: store.add(row)))


async def _call(sink: FeedbackSink, work: Any) -> Any:
    """``work(store)`` in a worker thread; 503 with the reason (never a text) when the database fails."""
    import sqlalchemy as sa

    try:
        return await asyncio.to_thread(lambda: work(sink.store()))
    except (ConfigError, sa.exc.SQLAlchemyError) as exc:
        reason = _reason(exc)
        log.event("feedback_store_failed", level=40, error=reason)
        raise ApiError(503, "feedback_unavailable", f"feedback cannot be stored now: {reason}",
                       {"Retry-After": "5"}) from None  # fmt: skip


def _reason(exc: BaseException) -> str:
    """One line about a database failure: the driver's first line, never SQLAlchemy's statement parameters."""
    from slm.storage.sql import driver_error, first_line

    return str(exc) if isinstance(exc, ConfigError) else first_line(driver_error(exc))


def _answer(row: dict[str, Any], *, duplicate: bool) -> JSONResponse:
    fields = {key: row.get(key) for key in ("id", "model", "version", "verdict", "label")}
    return JSONResponse({**fields, "duplicate": duplicate}, status_code=200 if duplicate else 201)
