"""Alert delivery: POST each stored, undelivered alert to a webhook, retrying with backoff.

The sender is :mod:`slm.storage.webhook`'s, over the monitor's database: a background thread, so a slow or
failing webhook never stalls ingest. Delivery is at least once: an alert is marked delivered only after a
2xx answer, and one still pending when the monitor stops is sent by the next run. Attempts and the last
error are stored with the alert.
"""

from __future__ import annotations

import logging
from typing import Any

from slm.apps.monitor.config import AlertConfig
from slm.apps.monitor.items import iso
from slm.apps.monitor.storage import MonitorStore
from slm.storage import webhook as storage_webhook

logger = logging.getLogger("slm.monitor")


def payload(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON body POSTed for one alert."""
    start = alert["window_start_ms"] / 1000
    return {"type": "negative_spike", "id": alert["id"], "kind": alert["kind"], "series": alert["series"],
            "window_start": iso(start), "window_end": iso(start + alert["window_ms"] / 1000),
            "negatives": alert["negatives"], "total": alert["total"], "baseline": alert["baseline"],
            "score": alert["score"]}  # fmt: skip


class _StoreOutbox:
    """The monitor's database as the webhook's outbox: alerts not delivered yet, and each attempt recorded."""

    def __init__(self, store: MonitorStore) -> None:
        self.store = store

    def pending(self) -> list[dict[str, Any]]:
        return self.store.pending_alerts()

    def mark(self, alert: dict[str, Any], *, delivered: bool, error: str | None = None) -> None:
        self.store.mark_delivery(alert["id"], delivered=delivered, error=error)


class WebhookSender(storage_webhook.WebhookSender[dict[str, Any]]):
    """Sends pending alerts from ``store`` to ``config.webhook`` until stopped (:mod:`slm.storage.webhook`)."""

    def __init__(self, store: MonitorStore, config: AlertConfig, *, idle_seconds: float = 5.0) -> None:
        if not config.webhook:
            raise ValueError("no webhook configured")
        super().__init__(
            config.webhook, _StoreOutbox(store), payload, retries=config.retries,
            timeout_seconds=config.timeout_seconds, backoff_seconds=config.backoff_seconds,
            idle_seconds=idle_seconds, describe=lambda alert: str(alert["id"]), logger=logger,
            thread_name="slm-monitor-webhook",
        )  # fmt: skip
        self.store, self.config = store, config
