"""Pure ASGI middleware (no per-request task or body copy): access log and metrics, API keys, body limit."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from slm.serving import log
from slm.serving.config import ServeConfig
from slm.serving.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PAGES = frozenset({"/", "/support", "/monitor"})  # HTML pages: a browser asks for the key with its Basic-auth prompt
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON error body ``{"error": {"code", "message"}}`` sent straight from middleware."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class AccessLog:
    """Counts, times and logs every HTTP request (one JSON line each) and tags it with a request id."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, enabled: bool = True) -> None:
        self.app, self.metrics, self.enabled = app, metrics, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})  # the handler adds fields for the log line in state["log"]
        status, size = 500, 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(seconds)
            if self.enabled:
                client = scope.get("client")
                log.event(
                    "request", logger=log.ACCESS_LOGGER, request_id=request_id, method=scope["method"],
                    path=scope["path"], status=status, duration_ms=round(seconds * 1000, 3), bytes=size,
                    client=client[0] if client else None, **state.get("log", {}),
                )  # fmt: skip


class ApiKeys:
    """401 for every request without a valid key, except health checks and CORS preflights.

    The key is read from ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or HTTP Basic (any user
    name, the key as password: a browser prompts for it on the playground and chat pages).
    """

    def __init__(self, app: ASGIApp, *, config: ServeConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.config.api_keys
            or scope["path"] in PUBLIC_PATHS
            or scope["method"] == "OPTIONS"
            or self.config.key_is_valid(self._presented(scope))
        ):
            await self.app(scope, receive, send)
            return
        challenge = b'Basic realm="slm", charset="UTF-8"' if scope["path"] in PAGES else b'Bearer realm="slm"'
        await send_error(send, 401, "unauthorized", "a valid API key is required (Authorization: Bearer KEY)",
                         [(b"www-authenticate", challenge)])  # fmt: skip

    @staticmethod
    def _presented(scope: Scope) -> str | None:
        key = _header(scope, b"x-api-key")
        if key:
            return key.strip()
        authorization = _header(scope, b"authorization") or ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return None
        return None


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit (the app answers 413)."""


class BodyLimit:
    """413 with a JSON body for a body over ``limit`` bytes: at once from Content-Length, else mid-stream.

    (Starlette's own limiter answers a declared oversized body in plain text, hence this one.)
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, "body_too_large", too_large_message(self.limit))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)


def too_large_message(limit: int) -> str:
    return f"the request body is larger than this server's limit of {limit:,} bytes"
