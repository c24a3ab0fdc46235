"""Answers other than 200, and the JSON and body helpers every route shares (the core's and the apps').

Every refusal is ``{"error": {"code", "message"}}`` with a stable code, whichever route sends it, so the
apps' routes raise the same :class:`ApiError` and parse bodies with the same :func:`read_body`.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from slm.serving.batching import QueueFull
from slm.serving.metrics import ServiceMetrics
from slm.serving.schemas import ErrorResponse, validation_message

# The error answers documented on the endpoints that parse their own bodies.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)
}
BodyT = TypeVar("BodyT", bound=BaseModel)


class ApiError(Exception):
    """An answer other than 200: status, a stable ``code`` and a one-line message, sent as JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def json_response(data: Any) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), media_type="application/json")


def overloaded(metrics: ServiceMetrics, name: str, full: QueueFull) -> ApiError:
    """503 with Retry-After for a full queue of the served bundle ``name``, counted as rejected."""
    metrics.rejected.labels(name, "queue_full").inc()
    return ApiError(503, "overloaded", str(full), {"Retry-After": str(full.retry_after)})


def shutting_down(metrics: ServiceMetrics, name: str) -> ApiError:
    """503 for a request that arrived while the server drains, counted as rejected."""
    metrics.rejected.labels(name, "shutting_down").inc()
    return ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"})


async def read_body(request: Request, model: type[BodyT]) -> BodyT:
    """The request's body parsed and validated as ``model``: 400 for malformed JSON, 422 for a wrong shape."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        code, message = validation_message(exc)
        raise ApiError(400 if code == "invalid_json" else 422, code, message) from None


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace, control (NUL...) or format characters (zero-width...).

    Stops at the first visible character, so an ordinary text costs one or two steps.
    """
    return all(char.isspace() or unicodedata.category(char) in ("Cc", "Cf") for char in text)
