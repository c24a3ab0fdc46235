"""Uvicorn's httptools protocol with the limits Uvicorn lacks: request-head timeout and size, body drain.

Uvicorn bounds neither the time a client may take to send a request head nor its size (h11 has
``h11_max_incomplete_event_size``, httptools nothing; https://github.com/Kludex/uvicorn/issues/157).
Measured before this module: ten connections trickling a head held ``--max-connections 10`` for as long as
they liked (every other request got 503), and 30 connections each sending an unfinished 16 MB header raised
the server's RSS from 162 to 674 MB before any API-key check could run. So, per connection:

- a request head must be complete within ``header_timeout`` seconds of the connection being accepted, or
  of its first byte on a kept-alive connection: else 408 (or a silent close when nothing was sent);
- a head larger than ``max_header_bytes`` is answered 431 as soon as it passes the limit, so a connection
  holds at most that plus one socket read;
- a response sent before the request body was read (401, 404, 413...) leaves the client ``body_timeout``
  seconds to finish the body, then the connection is closed;
- ``--max-connections`` is checked here rather than by Uvicorn (``limit_concurrency``, same rule): a request
  past it gets the usual JSON error body (Uvicorn's is plain text), and ``/healthz`` is answered even then: a
  liveness probe must not fail because the server is busy.
- ``early_checks`` run before the app: a predict request for a full queue is refused here
  (:mod:`slm.serving.admission`), without the cost of the app's middleware, and the connection stays open.

The body's own timeout is in the ASGI app (:class:`slm.serving.middleware.BodyLimit`), so it holds on Ray
Serve too; the limits here apply only where ``slm serve`` runs Uvicorn itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from slm.serving import log
from slm.serving.middleware import Receive, Scope, Send, send_error

# After refusing a request whose head is still arriving, keep reading (and dropping) what the client sends for
# this long before closing: closing a socket with unread data sends a reset that can destroy the answer before
# the client reads it (nginx's lingering close does the same).
LINGER_SECONDS = 2.0
ALWAYS_ANSWERED = frozenset({"/healthz"})


@dataclass(frozen=True)
class Refusal:
    """An answer given instead of running the app: a JSON error body, the connection kept open."""

    status: int
    code: str
    message: str
    headers: list[tuple[bytes, bytes]]


# Called with a request's scope before the app runs: None lets the request through (slm.serving.admission).
EarlyCheck = Callable[[Scope], Refusal | None]


def raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the JSON error body, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")  # fmt: skip
    return head.encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    """One connection; :func:`guarded_protocol` makes the subclass that carries a server's limits."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 16_384
    max_connections: ClassVar[int | None] = None
    early_checks: ClassVar[tuple[EarlyCheck, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # bytes of a request head have arrived and its end has not
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._app, self.app = self.app, self._admit

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: drop what is still in flight
        super().data_received(data)
        if self._in_head and not self._refused and not self.transport.is_closing():
            # An unfinished head, counted after parsing: it holds at most max_header_bytes plus one read when it
            # is refused. A head that ends in this chunk is measured in on_headers_complete.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._too_large(self._head_bytes)

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._head_timer is None:  # a kept-alive connection: the next head's clock starts with its first byte
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # The request line's target and every header (name, ": ", value, CRLF): the head, to a few bytes.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._too_large(size)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)  # then self.cycle is a later request, which Uvicorn starts now
        super().on_response_complete()
        cycle = self.cycle
        if not queued and cycle is not None and cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read (401, 404, 413...): the rest of the body is dropped as it comes,
            # but a client trickling it must not keep the connection forever.
            self._drain_timer = self.loop.call_later(self.body_timeout, self._drain_timed_out)

    # ------------------------------------------------------------ answers Uvicorn would give in plain text

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, or 503 past ``max_connections`` (Uvicorn's rule; this request's own task is counted here),
        or the first refusal of ``early_checks`` (a full queue), kept alive: the refused client may send its next
        request on the same connection."""
        limit = self.max_connections
        if (
            limit is not None
            and (len(self.connections) >= limit or len(self.tasks) > limit)
            and scope["path"] not in ALWAYS_ANSWERED
        ):
            await send_error(send, 503, "overloaded",
                             f"the server has its limit of {limit:,} open connections: retry shortly",
                             [(b"retry-after", b"1"), (b"connection", b"close")])  # fmt: skip
            return
        for check in self.early_checks:
            refusal = check(scope)
            if refusal is not None:
                await send_error(send, refusal.status, refusal.code, refusal.message, refusal.headers)
                return
        await self._app(scope, receive, send)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", "bad_request", "the request is not valid HTTP/1.1")

    # ------------------------------------------------------------ timeouts

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head:  # connected and sent nothing: nothing to answer
            self.transport.close()
            return
        log.event("header_timeout", level=30, client=self._client(), bytes=self._head_bytes)
        self._refuse(408, "Request Timeout", "request_timeout",
                     f"the request head did not arrive within {self.header_timeout:g} s")  # fmt: skip

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        if not self.transport.is_closing():
            log.event("body_timeout", level=30, client=self._client(), after="response")
            self.transport.close()

    def _too_large(self, size: int) -> None:
        log.event("headers_too_large", level=30, client=self._client(), bytes=size)
        limit = f"{self.max_header_bytes:,}"
        self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                     f"the request head is larger than this server's limit of {limit} bytes")  # fmt: skip

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer ``status`` (unless a response is under way), stop parsing, and close after a short linger."""
        if self._refused:
            return
        self._refused = True
        self._cancel_timers()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(raw_error(status, reason, code, message))
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._drain_timer = None

    def _client(self) -> str | None:
        return self.client[0] if self.client else None


def guarded_protocol(
    *,
    header_timeout: float,
    body_timeout: float,
    max_header_bytes: int,
    max_connections: int | None,
    early_checks: tuple[EarlyCheck, ...] = (),
) -> type[GuardedHttpTools]:
    """The protocol class Uvicorn instantiates per connection, with these limits and early refusals."""
    limits = {"header_timeout": header_timeout, "body_timeout": body_timeout,
              "max_header_bytes": max_header_bytes, "max_connections": max_connections,
              "early_checks": early_checks}  # fmt: skip
    return type("SlmHttpProtocol", (GuardedHttpTools,), limits)
