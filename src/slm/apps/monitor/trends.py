"""Per-series windows (counts, negative and positive shares, a rolling share) and the summary table."""

from __future__ import annotations

from typing import Any

from slm.apps.monitor.items import iso
from slm.apps.monitor.storage import MonitorStore

ROLLING = 6  # windows in the rolling negative share


def series_windows(
    store: MonitorStore, kind: str, name: str, window_ms: int, *, last: int | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Every window of one series up to ``last`` (default: the newest), zeros included, oldest first."""
    newest, oldest = store.watermark_ms(), store.first_ms()
    if newest is None or oldest is None:
        return []
    last = newest // window_ms if last is None else last
    first = max(oldest // window_ms, last - limit + 1)
    counts = store.counts(window_ms, first, last, kinds=[kind]).get((kind, name), {})
    rows = []
    negatives, totals = [], []
    for window in range(first, last + 1):
        c = counts.get(window)
        total, neg, pos = (c.total, c.negative, c.positive) if c else (0, 0, 0)
        negatives.append(neg)
        totals.append(total)
        seen = sum(totals[-ROLLING:])
        rows.append(
            {
                "window_start": iso(window * window_ms / 1000),
                "window": window,
                "total": total,
                "negative": neg,
                "positive": pos,
                "negative_share": round(neg / total, 4) if total else None,
                "positive_share": round(pos / total, 4) if total else None,
                "rolling_negative_share": round(sum(negatives[-ROLLING:]) / seen, 4) if seen else None,
            }
        )
    return rows


def summary(
    store: MonitorStore, window_ms: int, *, kinds: tuple[str, ...] = ("entity", "topic", "all"), limit: int = 20
) -> list[dict[str, Any]]:
    """The busiest series: totals, overall and latest-window negative share, alerts."""
    newest, oldest = store.watermark_ms(), store.first_ms()
    if newest is None or oldest is None:
        return []
    last = newest // window_ms
    first = oldest // window_ms
    alerts = store.list_alerts(limit=100_000)
    rows = []
    for kind in kinds:
        names = store.series_names(kind, limit=limit)
        if not names:
            continue
        counts = store.counts(window_ms, first, last, kinds=[kind])
        for name, _ in names:
            series = counts.get((kind, name), {})
            total = sum(c.total for c in series.values())
            neg = sum(c.negative for c in series.values())
            pos = sum(c.positive for c in series.values())
            latest = series.get(last)
            mine = [a for a in alerts if a["kind"] == kind and a["series"] == name]
            rows.append(
                {
                    "kind": kind,
                    "series": name,
                    "items": total,
                    "negative_share": round(neg / total, 4) if total else None,
                    "positive_share": round(pos / total, 4) if total else None,
                    "latest_negative_share": round(latest.negative / latest.total, 4) if latest else None,
                    "alerts": len(mine),
                    "last_alert": iso(max(a["window_start_ms"] for a in mine) / 1000) if mine else None,
                }
            )
    return rows
