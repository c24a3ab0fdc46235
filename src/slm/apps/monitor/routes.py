"""The monitor's HTTP side: ingest, summary, series, alerts, charts and the dashboard page at /monitor.

Added to every server by :class:`slm.apps.monitor.server.MonitorServer`; they serve the monitor the
server was started with (``slm app monitor serve`` or ``slm serve --monitor monitor.yaml``), and answer
404 ``no_monitor`` without one. Ingest runs in a worker thread, one batch at a time (the monitor is the
database's only writer); reads run in threads too.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import Query, Request
from fastapi.responses import Response

from slm.apps.monitor.items import Rejection
from slm.serving.extensions import RouteContext
from slm.serving.periodic import purge_interval, repeat_while_running
from slm.serving.responses import ApiError

if TYPE_CHECKING:
    from slm.apps.monitor.monitor import Monitor

KINDS = ("entity", "topic", "all")
MAX_INGEST_ITEMS = 10_000


def add_monitor_routes(context: RouteContext) -> None:
    """The /v1/monitor/* endpoints and /monitor; every one answers 404 ``no_monitor`` without a monitor."""
    app = context.app
    monitor: Monitor | None = context.attached
    context.add_page("/monitor", files("slm.apps.monitor").joinpath("static/monitor.html").read_text(encoding="utf-8"))

    if monitor is not None:  # stored items expire even while no new ones arrive
        repeat_while_running(app, purge_interval(monitor.config.retention_seconds), monitor.purge_if_due,
                             name="monitor_purge")  # fmt: skip

    def need() -> Monitor:
        if monitor is None:
            raise ApiError(404, "no_monitor", "no monitor is served here (start one with 'slm app monitor serve')")
        return monitor

    def kind_of(kind: str) -> str:
        if kind not in KINDS:
            raise ApiError(422, "invalid_request", f"kind must be one of {', '.join(KINDS)}, got '{kind}'")
        return kind

    @app.post("/v1/monitor/ingest", summary="Classify, store and score stream items (idempotent by item id)")
    async def ingest(request: Request) -> Response:
        current = need()
        objects = _objects(await request.body(), request.headers.get("content-type", ""))
        stats = await asyncio.to_thread(current.ingest, objects)
        return _json(stats.as_dict())

    @app.get("/v1/monitor/summary", summary="Totals, rejections by reason, and the busiest series")
    async def monitor_summary(limit: int = Query(20, ge=1, le=200)) -> Response:
        current = need()

        def read() -> dict[str, Any]:
            from slm.apps.monitor.trends import summary

            return {"window_seconds": current.window_ms / 1000, "totals": current.store.totals(),
                    "rejected": current.store.reject_counts(),
                    "series": summary(current.store, current.window_ms, limit=limit)}  # fmt: skip

        return _json(await asyncio.to_thread(read))

    @app.get("/v1/monitor/series/{kind}/{name}", summary="One series' windows: counts and sentiment shares")
    async def series(kind: str, name: str, limit: int = Query(500, ge=1, le=5000)) -> Response:
        from slm.apps.monitor.trends import series_windows

        current = need()
        rows = await asyncio.to_thread(series_windows, current.store, kind_of(kind), name, current.window_ms,
                                       limit=limit)  # fmt: skip
        return _json({"kind": kind, "series": name, "windows": rows})

    @app.get("/v1/monitor/alerts", summary="The latest alerts, newest first")
    async def alerts(
        limit: int = Query(100, ge=1, le=1000), kind: str | None = None, series: str | None = None
    ) -> Response:
        current = need()
        rows = await asyncio.to_thread(current.store.list_alerts, limit=limit, kind=kind, series=series)
        return _json({"alerts": [_alert(row) for row in rows]})

    @app.get("/v1/monitor/chart/{kind}/{name}.png", summary="One series' chart (PNG), alerts marked")
    async def chart(kind: str, name: str) -> Response:
        from slm.apps.monitor.report import series_chart

        current = need()
        png = await asyncio.to_thread(series_chart, current.store, kind_of(kind), name, current.window_ms)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _objects(body: bytes, content_type: str) -> list[Any]:
    """Items from a JSON array, ``{"items": [...]}``, one object, or JSON lines (application/x-ndjson).

    JSON nested deeper than Python's recursion limit raises RecursionError, not JSONDecodeError: one
    such line is a ``malformed_json`` rejection like any bad line, and such a body a 400.
    """
    text = body.decode("utf-8", errors="replace")
    if "ndjson" in content_type or "jsonl" in content_type:
        objects: list[Any] = []
        for line in text.splitlines():
            if line.strip():
                try:
                    objects.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    objects.append(Rejection("malformed_json", exc.msg, line[:200]))  # counted, not fatal
                except RecursionError:
                    objects.append(Rejection("malformed_json", "nested too deeply", line[:200]))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"body is not JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise ApiError(400, "invalid_json", "body is not JSON this server reads: nested too deeply") from None
        found = data.get("items") if isinstance(data, dict) and "items" in data else data
        objects = found if isinstance(found, list) else [found]
    if len(objects) > MAX_INGEST_ITEMS:
        raise ApiError(413, "too_many_items", f"{len(objects):,} items in one request (limit {MAX_INGEST_ITEMS:,})")
    return objects


def _alert(row: dict[str, Any]) -> dict[str, Any]:
    from slm.apps.monitor.webhook import payload

    return {**payload(row), "delivered": row["delivered_at"] is not None, "attempts": row["attempts"],
            "last_error": row["last_error"]}  # fmt: skip


def _json(data: Any) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, default=str), media_type="application/json")
