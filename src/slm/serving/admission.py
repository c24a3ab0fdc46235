"""Refuse a predict request for a full queue before the application stack runs: fast 503s under overload.

The app refuses such a request too (:func:`slm.serving.app.create_app`'s predict route checks the queue before
it reads the body), but only after the request has gone through FastAPI's and slm's middleware. Under
overload that stack is the server's bottleneck: every refusal costs the event loop as much as an
answer's routing, the loop falls behind, and a 503 waits in line behind the others. Measured with
``bench/serving.py``'s open loop at 4x the maximum rate on 2 cores: 503 p50 96 ms, p99 316-543 ms.

:class:`Admission` is called by the HTTP protocol (:mod:`slm.serving.protocol`) with the request's scope,
ahead of the app. It refuses only what the app would refuse the same way (the same 503 body and
``Retry-After``), and only for a client the app would not answer 401: with API keys on, a request without a
valid key goes on to the app. A refusal is counted in the same metrics as the app's; instead of one access
log line per request it is logged once a second with the count, as an ``overloaded`` event.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from slm.serving import log
from slm.serving.batching import QueueFull
from slm.serving.middleware import ApiKeys, Scope
from slm.serving.protocol import Refusal
from slm.serving.responses import overloaded
from slm.serving.service import ModelService

PREDICT_PATH = re.compile(r"^/v1/models/([^/]+)/predict$")
PREDICT_TEMPLATE = "/v1/models/{name}/predict"
LOG_EVERY_S = 1.0


class Admission:
    """The early check for one service; ``admission(scope)`` is None (go on to the app) or a :class:`Refusal`."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self._refused: dict[str, int] = {}  # by model, since the last log line
        self._logged = time.monotonic()

    def __call__(self, scope: Scope) -> Refusal | None:
        if scope["method"] != "POST":
            return None
        match = PREDICT_PATH.match(scope["path"])
        if match is None:
            return None
        name = match.group(1)
        model = self.service.get(name)
        if model is None or not model.batcher.full or not self._authorized(scope):
            return None
        error = overloaded(self.service.metrics, name, QueueFull(model.batcher.retry_after()))  # the app's answer
        self.service.metrics.requests.labels(PREDICT_TEMPLATE, "POST", str(error.status)).inc()  # AccessLog's count
        self._count(name)
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in (error.headers or {}).items()
        ]
        return Refusal(error.status, error.code, error.message, headers)

    def _authorized(self, scope: Scope) -> bool:
        keys = self.service.config.api_keys
        return not keys or self.service.config.key_is_valid(ApiKeys.presented(scope))

    def _count(self, name: str) -> None:
        self._refused[name] = self._refused.get(name, 0) + 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_S:
            fields: dict[str, Any] = {"refused": dict(self._refused), "seconds": round(now - self._logged, 3)}
            log.event("overloaded", level=logging.WARNING, **fields)
            self._refused.clear()
            self._logged = now
