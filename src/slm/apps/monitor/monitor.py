"""The monitor: parse, deduplicate, classify, attribute entities, store, score closed windows, alert.

>>> from slm.apps.monitor import Monitor, load_config
>>> with Monitor(load_config("monitor.yaml")) as monitor:
...     stats = monitor.run()            # the config's input: a JSONL file, or "-" for stdin
...     monitor.ingest([{"id": "1", "timestamp": "2025-01-31T12:00:00Z", "text": "$AAPL misses"}])
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm.apps.monitor.classify import Classifier
from slm.apps.monitor.config import MonitorConfig
from slm.apps.monitor.detect import spike
from slm.apps.monitor.items import Item, Rejection, parse_line, parse_object
from slm.apps.monitor.sources import FileSource, Line, Overlong, StdinSource, line_limit
from slm.apps.monitor.storage import MonitorStore, SeriesKey
from slm.apps.monitor.webhook import WebhookSender
from slm.durations import describe_duration
from slm.errors import ConfigError
from slm.lexicon import Lexicon
from slm.privacy import Redactor
from slm.storage.retention import purge_interval

log = logging.getLogger(__name__)
SCORED_KEY = "scored_through_window"


@dataclass
class IngestStats:
    """What one run or one request did; rejections by reason."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    alerts: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: IngestStats) -> None:
        for name in ("read", "stored", "duplicates", "alerts", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "stored": self.stored, "duplicates": self.duplicates,
                "rejected": dict(sorted(self.rejected.items())), "alerts": self.alerts, "batches": self.batches,
                "seconds": round(self.seconds, 3), "items_per_second": round(self.items_per_second, 1)}  # fmt: skip


class Monitor:
    """One writer over one store. ``run`` reads the configured input; ``ingest`` takes objects (HTTP)."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        store: MonitorStore | None = None,
    ) -> None:
        self.config = config
        self.window_ms = int(round(config.window_seconds * 1000))
        if self.window_ms < 1000:
            raise ConfigError("window must be at least 1s")
        self.lexicon = Lexicon.load(config.lexicon) if config.lexicon is not None else None
        self.classify = Classifier(config)
        self.store = store or MonitorStore.open(config.storage)
        self.on_alert = on_alert
        self.webhook = None
        if config.alerts.webhook:
            self.webhook = WebhookSender(self.store, config.alerts)
            self.webhook.start()
        self._lock = threading.Lock()  # one batch at a time, whoever sends it
        watermark = self.store.watermark_ms()
        self._watermark = -1 if watermark is None else watermark
        self._scored = self.store.get_state(self._scored_key)
        self._purged_at = 0.0
        self.redactor = Redactor() if config.redact else None  # stored texts only: classification sees the original
        self.purge_if_due()

    def _stored(self, text: str | None) -> str | None:
        """``text`` as it is stored: its personal data replaced (monitor.yaml ``redact``, on by default)."""
        return text if text is None or self.redactor is None else self.redactor.redact(text)

    def purge_if_due(self) -> int:
        """Delete what is older than the retention, at most hourly (at start, then as batches come); how many."""
        now = time.time()
        if now - self._purged_at < purge_interval(self.config.retention_seconds):
            return 0
        self._purged_at = now
        removed = self.store.purge(self.config.retention_seconds, now=now)
        if removed:
            ago = describe_duration(self.config.retention_seconds)
            log.info("monitor: deleted %d items stored more than %s ago", removed, ago)
        return removed

    @property
    def _scored_key(self) -> str:
        return f"{SCORED_KEY}:{self.window_ms}"

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self, *, flush_seconds: float = 10.0) -> None:
        if self.webhook is not None:
            self.webhook.stop(flush_seconds)
        self.store.close()

    # -- inputs ------------------------------------------------------------------------------
    def source(self, path: str | None = None, *, follow: bool | None = None) -> FileSource | StdinSource:
        path = path if path is not None else self.config.input
        if path is None:
            raise ConfigError("no input: set 'input' in the config or pass --input (a JSONL file, or - for stdin)")
        limit = line_limit(self.config.max_text_chars)
        if path == "-":
            return StdinSource(max_line_bytes=limit)
        follow = self.config.follow if follow is None else follow
        committed = self.store.offset(str(Path(path).resolve()))  # resume after the last committed batch
        return FileSource(path, start=committed, follow=follow, poll_seconds=self.config.poll_seconds,
                          max_line_bytes=limit)  # fmt: skip

    def run(
        self,
        source: FileSource | StdinSource | None = None,
        *,
        stop: Callable[[], bool] = lambda: False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestStats:
        """Read ``source`` (default: the config's input) to its end, or until ``stop()`` when following."""
        source = source or self.source()
        total = IngestStats()
        started = time.perf_counter()
        for batch in source.batches(self.config.batch_size, stop=stop):
            stats = self._process_lines(batch, source.key)
            total.add(stats)
            if progress is not None:
                progress(batch[-1][1])
            if stop():
                break
        total.seconds = time.perf_counter() - started
        return total

    def ingest(self, objects: Sequence[Any]) -> IngestStats:
        """Decoded JSON objects (the HTTP endpoint), in batches of the configured size; a Rejection passes through."""
        total = IngestStats()
        started = time.perf_counter()
        size = self.config.batch_size
        for start in range(0, len(objects), size):
            parsed = [o if isinstance(o, Rejection) else parse_object(o, max_text_chars=self.config.max_text_chars)
                      for o in objects[start:start + size]]  # fmt: skip
            keys = [uuid.uuid4().hex for _ in parsed]
            total.add(self._process(parsed, keys, source=None, offset=None))
        total.seconds = time.perf_counter() - started
        return total

    # -- one batch -----------------------------------------------------------------------------
    def _process_lines(self, batch: list[Line], source_key: str | None) -> IngestStats:
        parsed: list[Item | Rejection] = []
        keys: list[str] = []
        previous = None
        for line, end in batch:
            if isinstance(line, Overlong):  # read in pieces, never whole (sources.py)
                parsed.append(line.rejection(line_limit(self.config.max_text_chars)))
            else:
                parsed.append(parse_line(line, max_text_chars=self.config.max_text_chars))
            size = line.size if isinstance(line, Overlong) else len(line)
            start = end - size if previous is None else previous  # blank lines belong to the line before
            keys.append(f"{source_key}:{start}" if source_key else uuid.uuid4().hex)
            previous = end
        return self._process(parsed, keys, source=source_key, offset=batch[-1][1])

    def _process(
        self, parsed: list[Item | Rejection], keys: list[str], *, source: str | None, offset: int | None
    ) -> IngestStats:
        stats = IngestStats(read=len(parsed), batches=1)
        now = time.time()
        self.purge_if_due()
        reject_rows = []
        fresh: dict[str, Item] = {}
        for entry, key in zip(parsed, keys, strict=True):
            if isinstance(entry, Rejection):
                stats.rejected[entry.reason] += 1
                reject_rows.append({"key": key[:300], "reason": entry.reason, "detail": self._stored(entry.detail),
                                    "excerpt": self._stored(entry.excerpt), "at": now})  # fmt: skip
            elif entry.id in fresh:
                stats.duplicates += 1
            else:
                fresh[entry.id] = entry
        with self._lock:
            known = self.store.known_ids(list(fresh)) if fresh else set()
            stats.duplicates += len(known)
            todo = [item for item_id, item in fresh.items() if item_id not in known]
            results = self.classify([item.text for item in todo])
            rows: list[dict[str, Any]] = []
            mention_rows: list[dict[str, Any]] = []
            for item, result in zip(todo, results, strict=True):
                ts_ms = int(round(item.ts * 1000))
                rows.append({"id": item.id, "ts_ms": ts_ms, "source": item.source, "text": self._stored(item.text),
                             "sentiment": result.sentiment, "sentiment_score": result.sentiment_score,
                             "polarity": result.polarity, "topic": result.topic, "topic_score": result.topic_score,
                             "ingested_at": now})  # fmt: skip
                if self.lexicon is not None:
                    mention_rows += [{"item_id": item.id, "entity": entity, "ts_ms": ts_ms, "polarity": result.polarity}
                                     for entity in self.lexicon.entities(item.text)]  # fmt: skip
            self.store.commit_batch(rows, mention_rows, reject_rows, source=source, offset=offset)
            stats.stored = len(rows)
            if rows:
                self._watermark = max(self._watermark, max(r["ts_ms"] for r in rows))
            stats.alerts = self._score_closed_windows()
        return stats

    # -- windows -------------------------------------------------------------------------------
    def _score_closed_windows(self) -> int:
        """Score every window that newer items have closed, once; store (and send) their alerts."""
        if self._watermark < 0:
            return 0
        closed = self._watermark // self.window_ms - 1 - self.config.lateness
        if self._scored is None:
            first = self.store.first_ms()
            if first is None:  # nothing stored (a watermark means something was)
                return 0
            self._scored = first // self.window_ms - 1
        if closed <= self._scored:
            return 0
        cfg = self.config.alerts
        start = self._scored + 1
        counts = self.store.counts(self.window_ms, start - cfg.history, closed, kinds=self._kinds())
        last = self.store.last_alert_windows(self.window_ms)
        new = []
        for window in range(start, closed + 1):
            for key, series in counts.items():
                found = spike(series, window, cfg, last.get(key))
                if found is not None:
                    last[key] = window
                    new.append(_alert_row(key, window, self.window_ms, found))
        self.store.record_scoring(new, scored_through=closed, key=self._scored_key)
        self._scored = closed
        for alert in new:
            if self.on_alert is not None:
                self.on_alert(alert)
        if new and self.webhook is not None:
            self.webhook.wake()
        return len(new)

    def _kinds(self) -> Iterable[str]:
        kinds = ["all"]
        if self.lexicon is not None:
            kinds.append("entity")
        if self.config.topic is not None:
            kinds.append("topic")
        return kinds


def _alert_row(key: SeriesKey, window: int, window_ms: int, found: Any) -> dict[str, Any]:
    return {"kind": key[0], "series": key[1], "window_start_ms": window * window_ms, "window_ms": window_ms,
            "negatives": found.negatives, "total": found.total, "baseline": round(found.baseline, 4),
            "score": round(found.score, 4)}  # fmt: skip
