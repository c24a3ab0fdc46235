"""Alert delivery: POST each stored, undelivered alert to a webhook, retrying with backoff.

A background thread, so a slow or failing webhook never stalls ingest. Delivery is at least
once: an alert is marked delivered only after a 2xx answer, and one still pending when the
monitor stops is sent by the next run. Attempts and the last error are stored with the alert.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from slm.apps.monitor.config import AlertConfig
from slm.apps.monitor.items import iso
from slm.apps.monitor.storage import MonitorStore

logger = logging.getLogger("slm.monitor")


def payload(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON body POSTed for one alert."""
    start = alert["window_start_ms"] / 1000
    return {"type": "negative_spike", "id": alert["id"], "kind": alert["kind"], "series": alert["series"],
            "window_start": iso(start), "window_end": iso(start + alert["window_ms"] / 1000),
            "negatives": alert["negatives"], "total": alert["total"], "baseline": alert["baseline"],
            "score": alert["score"]}  # fmt: skip


class WebhookSender:
    """Sends pending alerts from ``store`` to ``config.webhook`` until stopped."""

    def __init__(self, store: MonitorStore, config: AlertConfig, *, idle_seconds: float = 5.0) -> None:
        if not config.webhook:
            raise ValueError("no webhook configured")
        self.url: str = config.webhook
        self.store, self.config, self.idle_seconds = store, config, idle_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = 0.0  # set by stop(): retries end at it
        self._thread = threading.Thread(target=self._loop, name="slm-monitor-webhook", daemon=True)
        self.client = httpx.Client(timeout=config.timeout_seconds)
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, flush_seconds: float = 10.0) -> None:
        """Send what is pending (up to ``flush_seconds``), then stop."""
        self._deadline = time.monotonic() + flush_seconds
        self._stopping.set()
        self._wake.set()
        self._thread.join(flush_seconds + self.config.timeout_seconds + 1)
        self.client.close()

    def send_pending(self) -> int:
        """One pass over the pending alerts; how many were delivered."""
        delivered = 0
        for alert in self.store.pending_alerts():
            if self.deliver(alert):
                delivered += 1
            elif self._stopping.is_set():
                break
        return delivered

    def deliver(self, alert: dict[str, Any]) -> bool:
        """POST one alert, with ``config.retries`` retries after the first attempt."""
        body = payload(alert)
        error = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                if self._stopping.is_set() and time.monotonic() > self._deadline:
                    break
                time.sleep(self.config.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=body)
                if 200 <= response.status_code < 300:
                    self.store.mark_delivery(alert["id"], delivered=True)
                    self.sent += 1
                    # debug, not info: the CLI shows info records, and this one was never shown
                    logger.debug("alert %s delivered to webhook", alert["id"])
                    return True
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        self.store.mark_delivery(alert["id"], delivered=False, error=error)
        self.failed += 1
        logger.warning("alert %s not delivered to webhook: %s", alert["id"], error)
        return False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.idle_seconds)
            self._wake.clear()
            try:
                self.send_pending()
            except Exception as exc:  # a database hiccup must not kill delivery for good
                logger.warning("webhook delivery pass failed: %s", exc)
            if self._stopping.is_set():
                return
