"""The monitor's database: SQLite by default, PostgreSQL through a SQLAlchemy URL.

SQLAlchemy Core, one schema for both. Every write that must not double-count is keyed:
items by their id, entity mentions by (item, entity), rejected lines by (source, byte offset),
alerts by (series, window). A batch's items, mentions, rejections and the file offset after it
commit in one transaction, so a monitor killed at any point resumes from the last committed
offset with nothing lost and nothing counted twice.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from slm.storage.sql import create_tables, dialect_insert, open_engine

metadata = sa.MetaData()
items = sa.Table(
    "monitor_items", metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, index=True),  # event time, epoch milliseconds UTC
    sa.Column("source", sa.String(200)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sentiment", sa.String(200), nullable=False),  # the predicted label
    sa.Column("sentiment_score", sa.Float, nullable=False),  # its probability
    sa.Column("polarity", sa.SmallInteger, nullable=False),  # -1 negative, 0 neither, 1 positive
    sa.Column("topic", sa.String(200), index=True),
    sa.Column("topic_score", sa.Float),
    sa.Column("ingested_at", sa.Float, nullable=False),
)  # fmt: skip
mentions = sa.Table(
    "monitor_mentions", metadata,
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("entity", sa.String(200), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),  # copied from the item: trends need no join
    sa.Column("polarity", sa.SmallInteger, nullable=False),
    sa.Index("ix_monitor_mentions_entity_ts", "entity", "ts_ms"),
    sa.Index("ix_monitor_mentions_ts", "ts_ms"),
)  # fmt: skip
rejects = sa.Table(
    "monitor_rejects", metadata,
    sa.Column("key", sa.String(300), primary_key=True),  # source:offset for files, a fresh id otherwise
    sa.Column("reason", sa.String(40), nullable=False, index=True),
    sa.Column("detail", sa.Text),
    sa.Column("excerpt", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)  # fmt: skip
offsets = sa.Table(
    "monitor_offsets", metadata,
    sa.Column("source", sa.String(1000), primary_key=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip
state = sa.Table(
    "monitor_state", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)  # fmt: skip
alerts = sa.Table(
    "monitor_alerts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # entity | topic | all
    sa.Column("series", sa.String(200), nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False),
    sa.Column("window_ms", sa.BigInteger, nullable=False),
    sa.Column("negatives", sa.Integer, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("baseline", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.UniqueConstraint("kind", "series", "window_start_ms", name="uq_monitor_alert_window"),
)  # fmt: skip

SeriesKey = tuple[str, str]  # (kind, name): ("entity", "AAPL"), ("topic", "earnings"), ("all", "*")


@dataclass(frozen=True)
class Counts:
    total: int
    negative: int
    positive: int


class MonitorStore:
    """The tables above on one engine; every method is one short transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert = dialect_insert(engine)  # the dialect's INSERT, which has ON CONFLICT DO NOTHING

    @classmethod
    def open(cls, url: str) -> MonitorStore:
        """Connect and create the tables if missing; ConfigError (one line) when the database is unreachable."""
        engine = open_engine(url)
        store = cls(engine)
        create_tables(engine, metadata)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # -- ingest --------------------------------------------------------------------------
    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored already."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                found.update(conn.execute(sa.select(items.c.id).where(items.c.id.in_(chunk))).scalars())
        return found

    def commit_batch(
        self,
        rows: Sequence[dict[str, Any]],
        entity_rows: Sequence[dict[str, Any]],
        reject_rows: Sequence[dict[str, Any]],
        *,
        source: str | None = None,
        offset: int | None = None,
    ) -> None:
        """Store one batch and, for a file, the offset after it: all of it or none of it."""
        with self.engine.begin() as conn:
            if rows:
                conn.execute(self._insert(items).on_conflict_do_nothing(), list(rows))
            if entity_rows:
                conn.execute(self._insert(mentions).on_conflict_do_nothing(), list(entity_rows))
            if reject_rows:
                conn.execute(self._insert(rejects).on_conflict_do_nothing(), list(reject_rows))
            if source is not None and offset is not None:
                stmt = self._insert(offsets).values(source=source, offset=offset, updated_at=time.time())
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[offsets.c.source], set_={"offset": offset, "updated_at": time.time()}
                    )
                )

    def purge(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete the items (texts), their mentions and the rejected lines stored more than ``older_than_s``
        seconds ago, in one transaction; how many items went. Trends and alerts of later windows are unchanged.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        old = sa.select(items.c.id).where(items.c.ingested_at < cutoff)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(mentions).where(mentions.c.item_id.in_(old)))
            removed = conn.execute(sa.delete(items).where(items.c.ingested_at < cutoff)).rowcount
            conn.execute(sa.delete(rejects).where(rejects.c.at < cutoff))
        return int(removed or 0)

    def offset(self, source: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(offsets.c.offset).where(offsets.c.source == source)).scalar()
        return int(value or 0)

    # -- windows and alerts ---------------------------------------------------------------
    def watermark_ms(self) -> int | None:
        """The newest event time stored."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(items.c.ts_ms))).scalar()
        return None if value is None else int(value)

    def first_ms(self) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.min(items.c.ts_ms))).scalar()
        return None if value is None else int(value)

    def get_state(self, key: str) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(state.c.value).where(state.c.key == key)).scalar()
        return None if value is None else int(value)

    def counts(
        self, window_ms: int, first: int, last: int, *, kinds: Iterable[str] = ("entity", "topic", "all")
    ) -> dict[SeriesKey, dict[int, Counts]]:
        """Item counts per series and window index ``first..last`` (window index = ts_ms // window_ms)."""
        lo, hi = first * window_ms, (last + 1) * window_ms
        kinds = set(kinds)
        queries: list[tuple[str, Any]] = []
        for kind, table, name, where in (
            ("entity", mentions, mentions.c.entity, ()),
            ("topic", items, items.c.topic, (items.c.topic.is_not(None),)),
            ("all", items, sa.literal("*"), ()),
        ):
            if kind in kinds:
                window = (table.c.ts_ms // window_ms).label("w")
                negative = sa.func.sum(sa.case((table.c.polarity < 0, 1), else_=0))
                positive = sa.func.sum(sa.case((table.c.polarity > 0, 1), else_=0))
                query = sa.select(name, window, sa.func.count(), negative, positive).where(
                    table.c.ts_ms >= lo, table.c.ts_ms < hi, *where
                )
                queries.append((kind, query.group_by(window) if kind == "all" else query.group_by(name, window)))
        out: dict[SeriesKey, dict[int, Counts]] = defaultdict(dict)
        with self.engine.connect() as conn:
            for kind, query in queries:
                for name, window, total, neg, pos in conn.execute(query):
                    out[(kind, str(name))][int(window)] = Counts(int(total), int(neg or 0), int(pos or 0))
        return dict(out)

    def last_alert_windows(self, window_ms: int) -> dict[SeriesKey, int]:
        """The window index of each series' latest alert."""
        query = sa.select(alerts.c.kind, alerts.c.series, sa.func.max(alerts.c.window_start_ms)).where(
            alerts.c.window_ms == window_ms).group_by(alerts.c.kind, alerts.c.series)  # fmt: skip
        with self.engine.connect() as conn:
            return {(k, s): int(start) // window_ms for k, s, start in conn.execute(query)}

    def record_scoring(self, new_alerts: Sequence[dict[str, Any]], *, scored_through: int, key: str) -> list[int]:
        """Store the alerts of the windows just scored and that they were scored; the new alerts' ids."""
        ids: list[int] = []
        with self.engine.begin() as conn:
            for alert in new_alerts:
                stmt = self._insert(alerts).values(**alert, created_at=time.time(), attempts=0)
                result = conn.execute(stmt.on_conflict_do_nothing().returning(alerts.c.id))
                ids.extend(result.scalars())
            stmt = self._insert(state).values(key=key, value=scored_through)
            conn.execute(stmt.on_conflict_do_update(index_elements=[state.c.key], set_={"value": scored_through}))
        return ids

    def pending_alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(alerts).where(alerts.c.delivered_at.is_(None)).order_by(alerts.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def mark_delivery(self, alert_id: int, *, delivered: bool, error: str | None = None) -> None:
        values: dict[str, Any] = {"attempts": alerts.c.attempts + 1, "last_error": error}
        if delivered:
            values["delivered_at"] = time.time()
        with self.engine.begin() as conn:
            conn.execute(sa.update(alerts).where(alerts.c.id == alert_id).values(**values))

    # -- reading -------------------------------------------------------------------------
    def list_alerts(self, *, limit: int = 100, kind: str | None = None, series: str | None = None) -> list[dict]:
        query = sa.select(alerts).order_by(alerts.c.window_start_ms.desc(), alerts.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(alerts.c.kind == kind)
        if series is not None:
            query = query.where(alerts.c.series == series)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def series_names(self, kind: str, *, limit: int = 20) -> list[tuple[str, int]]:
        """The busiest series of a kind, with their item counts."""
        if kind == "entity":
            query = sa.select(mentions.c.entity, sa.func.count()).group_by(mentions.c.entity)
        elif kind == "topic":
            query = sa.select(items.c.topic, sa.func.count()).where(items.c.topic.is_not(None)).group_by(items.c.topic)
        else:
            query = sa.select(sa.literal("*"), sa.func.count()).select_from(items)
        query = query.order_by(sa.func.count().desc(), sa.text("1")).limit(limit)
        with self.engine.connect() as conn:
            return [(str(name), int(n)) for name, n in conn.execute(query) if n]

    def reject_counts(self) -> dict[str, int]:
        query = sa.select(rejects.c.reason, sa.func.count()).group_by(rejects.c.reason).order_by(rejects.c.reason)
        with self.engine.connect() as conn:
            return {reason: int(n) for reason, n in conn.execute(query)}

    def totals(self) -> dict[str, int]:
        with self.engine.connect() as conn:

            def count(table: sa.Table, *where: Any) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar() or 0)

            return {
                "items": count(items),
                "mentions": count(mentions),
                "rejected": count(rejects),
                "alerts": count(alerts),
                "alerts_pending": count(alerts, alerts.c.delivered_at.is_(None)),
            }

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every stored row that ingest decides (not wall-clock times), sorted: to compare two runs."""
        columns = {
            items: [c for c in items.c if c.name != "ingested_at"],
            mentions: list(mentions.c),
            rejects: [rejects.c.key, rejects.c.reason, rejects.c.detail, rejects.c.excerpt],
            alerts: [c for c in alerts.c if c.name not in ("id", "created_at", "delivered_at", "attempts",
                                                            "last_error")],
        }  # fmt: skip
        with self.engine.connect() as conn:
            return {table.name: sorted(tuple(row) for row in conn.execute(sa.select(*cols)))
                    for table, cols in columns.items()}  # fmt: skip
