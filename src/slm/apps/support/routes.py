"""The support app's HTTP side: answer a question, list the unanswered ones, the chat page at /support.

Added to every server by :class:`slm.apps.support.server.SupportServer`; without an assistant among the
served bundles each endpoint answers 404 ``unknown_assistant`` (the chat page says so itself).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from importlib.resources import files
from typing import Any

from fastapi import Query, Request
from fastapi.responses import Response

from slm.apps.support.schemas import AnswerRequest, AnswerResponse, UnansweredResponse
from slm.apps.support.served import Assistants, ServedAssistant
from slm.serving.batching import QueueFull, ShuttingDown
from slm.serving.config import ServeConfig
from slm.serving.extensions import RouteContext
from slm.serving.periodic import purge_interval, repeat_while_running
from slm.serving.responses import (
    ERRORS,
    ApiError,
    is_blank,
    json_response,
    overloaded,
    read_body,
    shutting_down,
)
from slm.serving.schemas import ErrorResponse, request_body_schema


def add_support_routes(context: RouteContext) -> None:
    """The support assistants: answer, the unanswered questions, the chat page."""
    app, service = context.app, context.service
    group = context.group if isinstance(context.group, Assistants) else None
    if group is not None:  # logged turns expire even while no new ones arrive
        retention = service.config.support_retention
        repeat_while_running(app, purge_interval(retention), group.purge, name="support_purge")
    context.add_page("/support", files("slm.apps.support").joinpath("static/chat.html").read_text(encoding="utf-8"))

    async def answer(request: Request, name: str | None) -> Response:
        started = time.perf_counter()
        assistant = None if name is None else _assistant(context, group, name)
        if assistant is not None and assistant.batcher.full:  # refuse before reading and parsing the body
            raise overloaded(service.metrics, assistant.name, QueueFull(assistant.batcher.retry_after()))
        body = await read_body(request, AnswerRequest)
        if assistant is None:
            assistant = _assistant(context, group, body.assistant)
        elif body.assistant is not None and body.assistant != assistant.name:
            raise ApiError(422, "invalid_request", f"assistant: '{body.assistant}' differs from the URL's "
                           f"'{assistant.name}' (give one or the other)")  # fmt: skip
        question = _checked_question(body.question, service.config)
        conversation = body.conversation_id or uuid.uuid4().hex
        # as the support log stores it: a client may use a phone number or an e-mail as its conversation id
        redactor = assistant.conversations.redactor
        logged = conversation if redactor is None else redactor.redact(conversation)
        request.state.log = {"assistant": assistant.name, "conversation_id": logged}
        try:
            reply = await assistant.answer(question, context=body.context, conversation_id=conversation)
        except QueueFull as exc:
            raise overloaded(service.metrics, assistant.name, exc) from None
        except ShuttingDown:
            raise shutting_down(service.metrics, assistant.name) from None
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
        if group is None:
            raise ApiError(404, "unknown_assistant", "no support assistant is served here")
        rows = await asyncio.to_thread(group.conversations.unanswered, limit=limit, assistant=assistant)
        for row in rows:
            row["predicted_intent"] = row.pop("intent")
        return json_response({"unanswered": rows})


def _assistant(context: RouteContext, group: Assistants | None, name: str | None) -> ServedAssistant:
    """The assistant named ``name``; the only one served when ``name`` is None."""
    assistants = {} if group is None else group.served
    if name is None:
        if len(assistants) == 1:
            return next(iter(assistants.values()))
        if not assistants:
            raise ApiError(404, "unknown_assistant", "no support assistant is served here")
        raise ApiError(422, "invalid_request", "assistant: several assistants are served, name one of "
                       f"{', '.join(sorted(assistants))}")  # fmt: skip
    assistant = assistants.get(name)
    if assistant is None:
        served = ", ".join(sorted(assistants)) or "none"
        model = context.service.get(name)
        kind = " is a classification model, not a support assistant" if model else " is not served here"
        raise ApiError(404, "unknown_assistant", f"assistant '{name}'{kind} (assistants: {served})")
    return assistant


def _checked_question(question: str, config: ServeConfig) -> str:
    """Refuse a blank question or one over ``max_chars`` (never cut: a cut question changes its meaning)."""
    if is_blank(question):
        raise ApiError(422, "empty_text", "question: the question is empty")
    if len(question) > config.max_chars:
        raise ApiError(422, "text_too_long", f"question: {len(question):,} characters, more than this server's "
                       f"limit of {config.max_chars:,}")  # fmt: skip
    return question
