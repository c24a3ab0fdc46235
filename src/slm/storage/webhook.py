"""Alert delivery: POST each pending alert of an :class:`Outbox` to a webhook, retrying with backoff.

A background thread, so a slow or failing webhook never stalls the work that raises alerts (the monitor's
ingest, the server's requests). Delivery is at least once: an alert leaves the outbox's pending list only
once a POST got a 2xx answer, and one still pending when the sender stops is the outbox's to keep (the
monitor's SQL store sends it on its next run; the server's in-memory outbox, :class:`MemoryOutbox`, loses it).

Used by the sentiment monitor (:mod:`slm.apps.monitor.webhook`, alerts in its database) and the server's
drift monitor (:mod:`slm.serving.drift`, alerts in memory).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import httpx

AlertT = TypeVar("AlertT")

log = logging.getLogger("slm.storage")


class Outbox(Protocol[AlertT]):
    """Where alerts wait for delivery; the sender calls it from its own thread."""

    def pending(self) -> list[AlertT]:
        """Alerts not delivered yet, oldest first (a bounded batch)."""
        ...

    def mark(self, alert: AlertT, *, delivered: bool, error: str | None = None) -> None:
        """Record one delivery attempt: delivered (leave the pending list) or failed with ``error``."""
        ...


class WebhookSender(Generic[AlertT]):
    """Sends ``outbox``'s pending alerts, each as ``payload(alert)``, to ``url`` until stopped.

    Each alert gets ``retries`` more attempts after the first, ``backoff_seconds`` doubling between them;
    one that still fails stays pending and is tried again on a later pass (every ``idle_seconds``, or at
    :meth:`wake`).
    """

    def __init__(
        self,
        url: str,
        outbox: Outbox[AlertT],
        payload: Callable[[AlertT], dict[str, Any]],
        *,
        retries: int = 4,
        timeout_seconds: float = 5.0,
        backoff_seconds: float = 0.5,
        idle_seconds: float = 5.0,
        describe: Callable[[AlertT], str] = str,
        logger: logging.Logger = log,
        thread_name: str = "slm-webhook",
    ) -> None:
        if not url:
            raise ValueError("no webhook configured")
        self.url, self.outbox, self.payload = url, outbox, payload
        self.retries, self.timeout_seconds, self.backoff_seconds = retries, timeout_seconds, backoff_seconds
        self.idle_seconds, self.describe, self.logger = idle_seconds, describe, logger
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = 0.0  # set by stop(): retries end at it
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self.client = httpx.Client(timeout=timeout_seconds)
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Send now rather than at the next idle pass (a new alert is pending)."""
        self._wake.set()

    def stop(self, flush_seconds: float = 10.0) -> None:
        """Send what is pending (up to ``flush_seconds``), then stop."""
        self._deadline = time.monotonic() + flush_seconds
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(flush_seconds + self.timeout_seconds + 1)
        self.client.close()

    def send_pending(self) -> int:
        """One pass over the pending alerts; how many were delivered."""
        delivered = 0
        for alert in self.outbox.pending():
            if self.deliver(alert):
                delivered += 1
            elif self._stopping.is_set():
                break
        return delivered

    def deliver(self, alert: AlertT) -> bool:
        """POST one alert, with ``retries`` retries after the first attempt."""
        body = self.payload(alert)
        error = None
        for attempt in range(self.retries + 1):
            if attempt:
                if self._stopping.is_set() and time.monotonic() > self._deadline:
                    break
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=body)
                if 200 <= response.status_code < 300:
                    self.outbox.mark(alert, delivered=True)
                    self.sent += 1
                    # debug, not info: the CLI shows info records, and this one was never shown
                    self.logger.debug("alert %s delivered to webhook", self.describe(alert))
                    return True
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        self.outbox.mark(alert, delivered=False, error=error)
        self.failed += 1
        self.logger.warning("alert %s not delivered to webhook: %s", self.describe(alert), error)
        return False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.idle_seconds)
            self._wake.clear()
            try:
                self.send_pending()
            except Exception as exc:  # a database hiccup must not kill delivery for good
                self.logger.warning("webhook delivery pass failed: %s", exc)
            if self._stopping.is_set():
                return


class MemoryOutbox:
    """A bounded in-memory outbox of JSON-ready alerts (dicts): the oldest is dropped when it is full.

    For a process that keeps no database (the server's drift alerts): what is pending when it stops is lost.
    Thread-safe (alerts are added in the event loop, delivered from the sender's thread).
    """

    def __init__(self, capacity: int = 100) -> None:
        self._alerts: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, alert: dict[str, Any]) -> None:
        with self._lock:
            if len(self._alerts) == self._alerts.maxlen:
                self.dropped += 1
            self._alerts.append(alert)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._alerts)

    def mark(self, alert: dict[str, Any], *, delivered: bool, error: str | None = None) -> None:
        with self._lock:
            if delivered:
                with contextlib.suppress(ValueError):  # dropped meanwhile for a newer one
                    self._alerts.remove(alert)
            else:
                alert["attempts"] = alert.get("attempts", 0) + 1
                alert["last_error"] = error

    def __len__(self) -> int:
        with self._lock:
            return len(self._alerts)
