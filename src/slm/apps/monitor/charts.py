"""PNG charts of one series: sentiment shares over time with alert markers, and volume. Used by the
report command and the dashboard alike (matplotlib, headless)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any


def sentiment_chart(windows: list[dict[str, Any]], alerts: list[dict[str, Any]], title: str) -> bytes:
    """Negative/positive share per window (and the rolling negative share), volume below, alerts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from slm.reports.fonts import use_cjk_fallback

    use_cjk_fallback([title])
    times = [datetime.fromisoformat(w["window_start"].replace("Z", "+00:00")) for w in windows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    try:
        top.plot(times, [w["negative_share"] for w in windows], color="#c0392b", lw=1, alpha=0.5, label="negative")
        top.plot(times, [w["positive_share"] for w in windows], color="#27ae60", lw=1, alpha=0.5, label="positive")
        top.plot(times, [w["rolling_negative_share"] for w in windows], color="#c0392b", lw=2,
                 label="negative (rolling)")  # fmt: skip
        top.set_ylim(0, 1)
        top.set_ylabel("share of items")
        top.set_title(title)
        bottom.bar(times, [w["total"] for w in windows], width=_bar_width(times), color="#95a5a6", label="items")
        bottom.bar(times, [w["negative"] for w in windows], width=_bar_width(times), color="#c0392b",
                   label="negative")  # fmt: skip
        bottom.set_ylabel("items")
        for alert in alerts:
            at = datetime.fromtimestamp(alert["window_start_ms"] / 1000, UTC)
            for axis in (top, bottom):
                axis.axvline(at, color="#8e44ad", lw=1.5, ls="--")
            top.plot([at], [0.97], marker="v", color="#8e44ad", ms=9)
        if alerts:
            top.plot([], [], color="#8e44ad", ls="--", label=f"alert ({len(alerts)})")
        top.legend(loc="upper left", fontsize=8, ncol=4)
        bottom.legend(loc="upper left", fontsize=8, ncol=2)
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        fig.autofmt_xdate()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _bar_width(times: list[datetime]) -> float:
    if len(times) < 2:
        return 0.02
    return (times[1] - times[0]).total_seconds() / 86400 * 0.9
