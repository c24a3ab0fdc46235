"""Pure ASGI middleware (no per-request task or body copy): access log and metrics, API keys, body limits,
internal errors."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from slm.serving import log
from slm.serving.config import ServeConfig
from slm.serving.metrics import ServiceMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PAGES = frozenset({"/"})  # HTML pages: a browser asks for the key with its Basic-auth prompt (apps add theirs)
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
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for key, value in headers:
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
        state["request_id"] = request_id  # handlers answer with it (feedback can name a prediction by it)
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
    name, the key as password: a browser prompts for it on the HTML ``pages``, the playground's and the apps').
    """

    def __init__(self, app: ASGIApp, *, config: ServeConfig, pages: frozenset[str] = PAGES) -> None:
        self.app, self.config, self.pages = app, config, pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.config.api_keys
            or scope["path"] in PUBLIC_PATHS
            or scope["method"] == "OPTIONS"
            or self.config.key_is_valid(self.presented(scope))
        ):
            await self.app(scope, receive, send)
            return
        challenge = b'Basic realm="slm", charset="UTF-8"' if scope["path"] in self.pages else b'Bearer realm="slm"'
        await send_error(send, 401, "unauthorized", "a valid API key is required (Authorization: Bearer KEY)",
                         [(b"www-authenticate", challenge)])  # fmt: skip

    @staticmethod
    def presented(scope: Scope) -> str | None:
        """The API key the request carries, from any of the three headers; None when it has none."""
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


class BodyError(HTTPException):
    """Raised from ``receive`` while a body is read; the app answers ``status`` with ``code``.

    An HTTPException because FastAPI's own body parsing (the routes with a pydantic body) passes those
    through unchanged, where any other exception would become its generic 400.
    """

    status, code = 400, "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(self.status, message)


class BodyTooLarge(BodyError):
    status, code = 413, "body_too_large"


class BodyTimeout(BodyError):
    status, code = 408, "request_timeout"


class ClientGone(BodyError):
    """The client disconnected before its body was complete: nobody reads the answer (logged as 499)."""

    status, code = 499, "client_disconnected"


class BodyLimit:
    """413 with a JSON body for a body over ``limit`` bytes: at once from Content-Length, else mid-stream;
    408 for one not complete ``timeout`` seconds after its head; a disconnect mid-body is :class:`ClientGone`.

    (Starlette's own limiter answers a declared oversized body in plain text, hence this one. The timeout
    is here, in the app, so that it holds behind Ray Serve's proxy too.)
    """

    def __init__(self, app: ASGIApp, *, limit: int, timeout: float = 30.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, "body_too_large", too_large_message(self.limit))
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        received, complete = 0, False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later calls only wait for a disconnect, with no deadline
                return await receive()
            try:
                # One timer per call: measured +17-28 us on uvloop on this 2-core machine under a load of 6
                # (asyncio.wait_for, which also makes a task: +23-34 us).
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientGone("the client disconnected before sending the whole body")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(too_large_message(self.limit))
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


class InternalErrors:
    """A 500 with the JSON error body for an unexpected exception, logged once with its traceback.

    (An ``Exception`` handler on the FastAPI app runs in Starlette's outermost middleware, which re-raises
    after answering so that the server logs it too: every 500 was logged twice.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            log.event("internal_error", level=logging.ERROR, exc_info=exc, path=scope["path"],
                      error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            if not started:  # else the server closes the connection: the answer is cut short
                await send_error(send, 500, "internal_error", "the server failed to answer this request; see its log")


def too_large_message(limit: int) -> str:
    return f"the request body is larger than this server's limit of {limit:,} bytes"
