"""``slm app monitor report``: the summary table (JSON + Markdown) and one PNG chart per busy series."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from slm.apps.monitor.charts import sentiment_chart
from slm.apps.monitor.storage import MonitorStore
from slm.apps.monitor.trends import series_windows, summary
from slm.fileio import claim_output_files, record_output, write_bytes_atomic, write_text_atomic

REPORT_FILES = ("summary.json", "summary.md", "charts")  # what a report writes into its output folder


def chart_name(kind: str, series: str) -> str:
    """A file name for a series' chart: ``entity-AAPL.png``; other characters become ``_``."""
    return f"{kind}-{re.sub(r'[^0-9A-Za-z._-]+', '_', series).strip('_') or 'series'}.png"


def series_chart(store: MonitorStore, kind: str, series: str, window_ms: int) -> bytes:
    windows = series_windows(store, kind, series, window_ms)
    alerts = store.list_alerts(limit=10_000, kind=kind, series=series)
    label = "all items" if kind == "all" else f"{kind} {series}"
    return sentiment_chart(windows, alerts, f"{label}: sentiment per {_window_text(window_ms)}")


def write_report(
    store: MonitorStore, window_ms: int, output: Path, *, limit: int = 12, force: bool = False
) -> dict[str, Any]:
    """Write summary.json, summary.md and charts/*.png under ``output``; return the summary.

    Such files already in ``output`` that slm did not write are refused, or with ``force`` moved aside.
    """
    claim_output_files(output, REPORT_FILES, force=force)
    rows = summary(store, window_ms, limit=limit)
    charts = output / "charts"
    for row in rows:
        name = chart_name(row["kind"], row["series"])
        write_bytes_atomic(charts / name, series_chart(store, row["kind"], row["series"], window_ms))
        record_output(output, [f"charts/{name}"])
        row["chart"] = f"charts/{name}"
    data = {"window_seconds": window_ms / 1000, "totals": store.totals(), "rejected": store.reject_counts(),
            "series": rows, "alerts": store.list_alerts(limit=200)}  # fmt: skip
    write_text_atomic(output / "summary.json", json.dumps(data, indent=2, ensure_ascii=False, default=str))
    write_text_atomic(output / "summary.md", markdown(data))
    record_output(output, ["summary.json", "summary.md"])
    return data


def markdown(data: dict[str, Any]) -> str:
    totals = data["totals"]
    lines = ["# Monitor report", "",
             f"{totals['items']:,} items, {totals['mentions']:,} entity mentions, {totals['rejected']:,} rejected "
             f"lines, {totals['alerts']:,} alerts ({totals['alerts_pending']:,} not yet delivered).", ""]  # fmt: skip
    if data["rejected"]:
        lines += ["Rejected by reason: " + ", ".join(f"{k} {v:,}" for k, v in data["rejected"].items()), ""]
    lines += ["| kind | series | items | negative | positive | latest window negative | alerts | last alert |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in data["series"]:
        lines.append(f"| {row['kind']} | {row['series']} | {row['items']:,} | {percent(row['negative_share'])} | "
                     f"{percent(row['positive_share'])} | {percent(row['latest_negative_share'])} | {row['alerts']} | "
                     f"{row['last_alert'] or '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _window_text(window_ms: int) -> str:
    seconds = window_ms / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
