"""The feedback store: corrections of a served model's answers, durable, idempotent, and expiring.

One SQLAlchemy Core table, ``slm_feedback``, on SQLite by default or PostgreSQL by URL
(:mod:`slm.storage.sql`). Each row is one verdict on one text: the label the model gave (``predicted``), the
correct label (``label``: possibly one the model has never seen, which is how new intents arrive) and the
``verdict``. Its ``id`` is the client's idempotency key: the same id with the same content again is a
duplicate (stored once), with other content a conflict (refused). Texts are personal data: with a
:class:`~slm.privacy.Redactor` (the server's default) e-mail addresses, phone, card and ID numbers... are
replaced before a row is stored, and every row expires after the retention (:meth:`FeedbackStore.purge`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from slm.feedback.rows import MAX_ID, MAX_LABEL, MAX_USER, Row, new_id, same_content
from slm.privacy import Redactor
from slm.storage.sql import create_tables, dialect_insert, open_engine

# Rows written per statement and read per chunk: a few MB of texts at most, whatever the table holds.
CHUNK_ROWS = 500
REDACTED = ("text", "note", "user_id")  # the free-text columns: personal data is replaced before they are stored

metadata = sa.MetaData()
feedback = sa.Table(
    "slm_feedback", metadata,
    sa.Column("id", sa.String(MAX_ID), primary_key=True),  # the client's idempotency key, or a generated one
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64)),  # the bundle version that answered, when known
    sa.Column("request_id", sa.String(64)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("predicted", sa.String(MAX_LABEL)),  # the label the model gave
    sa.Column("label", sa.String(MAX_LABEL)),  # the correct label: may be one the model does not know yet
    sa.Column("verdict", sa.String(10)),  # correct | wrong | unsure; NULL: a label with no verdict on the model
    sa.Column("note", sa.Text),
    sa.Column("user_id", sa.String(MAX_USER)),
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds, UTC
    sa.Index("ix_slm_feedback_created", "created_at", "id"),  # retention and chunked reads in time order
    sa.Index("ix_slm_feedback_model_created", "model", "created_at"),
)  # fmt: skip
MAX_EXAMPLES = 5  # conflicting ids an AddResult names (the count is exact)


@dataclass(frozen=True)
class AddResult:
    """What :meth:`FeedbackStore.add_many` did: rows inserted, repeats ignored, rows refused (and a few of
    their ids: an import of millions of rows keeps no list of them)."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    conflict_ids: tuple[str, ...] = ()

    def __add__(self, other: AddResult) -> AddResult:
        ids = (*self.conflict_ids, *other.conflict_ids)[:MAX_EXAMPLES]
        return AddResult(self.inserted + other.inserted, self.duplicates + other.duplicates,
                         self.conflicts + other.conflicts, ids)  # fmt: skip


@dataclass(frozen=True)
class ErrorRate:
    """Verdicts on a model: wrong / (wrong + correct); None before any."""

    wrong: int
    correct: int
    unsure: int

    @property
    def rate(self) -> float | None:
        judged = self.wrong + self.correct
        return self.wrong / judged if judged else None


class FeedbackStore:
    """The ``slm_feedback`` table on one engine; every method is one short transaction."""

    def __init__(self, engine: sa.Engine, redactor: Redactor | None = None) -> None:
        self.engine = engine
        self.redactor = redactor
        self._insert = dialect_insert(engine)

    @classmethod
    def open(cls, url: str, *, redactor: Redactor | None = None) -> FeedbackStore:
        """Connect and create the table if missing; ConfigError (one line) when the database is unreachable.

        ``redactor``: replaces personal data in the text, note and user id of every row stored (None: as given).
        """
        engine = open_engine(url, what="feedback")
        store = cls(engine, redactor)
        create_tables(engine, metadata, what="feedback")
        return store

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -------------------------------------------------------------------------
    def add(self, row: Row) -> str:
        """Store one row: ``"inserted"``, ``"duplicate"`` (same id, same content) or ``"conflict"``."""
        result = self.add_many([row])
        return "inserted" if result.inserted else "duplicate" if result.duplicates else "conflict"

    def add_many(self, rows: Iterable[Row]) -> AddResult:
        """Store rows (dicts with the table's columns; ``id`` and ``created_at`` filled in when missing).

        Each chunk is one transaction: its new rows are inserted (ON CONFLICT DO NOTHING, so two writers
        racing on one id store it once), then the rest compared with what is stored under their ids.
        """
        total = AddResult()
        chunk: list[Row] = []
        for row in rows:
            chunk.append(self.redacted(_complete(row)))
            if len(chunk) >= CHUNK_ROWS:
                total += self._add_chunk(chunk)
                chunk = []
        if chunk:
            total += self._add_chunk(chunk)
        return total

    def redacted(self, row: Row) -> Row:
        """``row`` as it would be stored: its free-text columns redacted (when the store redacts)."""
        if self.redactor is None:
            return row
        redact = self.redactor.redact
        return {**row, **{key: redact(row[key]) for key in REDACTED if isinstance(row.get(key), str)}}

    def _add_chunk(self, rows: list[Row]) -> AddResult:
        unique: dict[str, Row] = {}
        repeats: list[Row] = []  # a second row with an id seen earlier in the same chunk
        for row in rows:
            if row["id"] in unique:
                repeats.append(row)
            else:
                unique[row["id"]] = row
        with self.engine.begin() as conn:
            stmt = self._insert(feedback).on_conflict_do_nothing(index_elements=[feedback.c.id])
            inserted = set(conn.execute(stmt.returning(feedback.c.id), list(unique.values())).scalars())
            others = [row for row in unique.values() if row["id"] not in inserted] + repeats
            stored = self._stored(conn, [row["id"] for row in others])
        conflicts = [row["id"] for row in others if not same_content(stored[row["id"]], row)]
        return AddResult(len(inserted), len(others) - len(conflicts), len(conflicts), tuple(conflicts[:MAX_EXAMPLES]))

    def _stored(self, conn: sa.Connection, ids: Sequence[str]) -> dict[str, Row]:
        if not ids:
            return {}
        query = sa.select(feedback).where(feedback.c.id.in_(sorted(set(ids))))
        return {row.id: dict(row._mapping) for row in conn.execute(query)}

    def purge(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete the rows created more than ``older_than_s`` seconds ago; how many went."""
        cutoff = (time.time() if now is None else now) - older_than_s
        with self.engine.begin() as conn:
            return int(conn.execute(sa.delete(feedback).where(feedback.c.created_at < cutoff)).rowcount or 0)

    # -- reading -------------------------------------------------------------------------
    def get(self, row_id: str) -> Row | None:
        with self.engine.connect() as conn:
            return self._stored(conn, [row_id]).get(row_id)

    def count(self, *, model: str | None = None, since: float | None = None) -> int:
        """Rows stored (about ``model``; created at or after ``since``, epoch seconds)."""
        query = sa.select(sa.func.count()).select_from(feedback).where(*_filters(model, since))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def chunks(
        self, *, model: str | None = None, since: float | None = None, size: int = CHUNK_ROWS
    ) -> Iterator[list[Row]]:
        """Every matching row, oldest first, ``size`` at a time: memory stays flat however big the table.

        Keyset pages on (created_at, id), each its own short read: no cursor stays open between chunks,
        so a slow consumer never holds a SQLite write lock or a PostgreSQL snapshot.
        """
        after: tuple[float, str] | None = None
        while True:
            query = sa.select(feedback).where(*_filters(model, since))
            if after is not None:
                created, last_id = after
                later = sa.and_(feedback.c.created_at == created, feedback.c.id > last_id)
                query = query.where(sa.or_(feedback.c.created_at > created, later))
            query = query.order_by(feedback.c.created_at, feedback.c.id).limit(size)
            with self.engine.connect() as conn:
                rows = [dict(row._mapping) for row in conn.execute(query)]
            if not rows:
                return
            yield rows
            after = (rows[-1]["created_at"], rows[-1]["id"])

    def error_rate(self, model: str, *, since: float | None = None) -> ErrorRate:
        """How often the verdicts on ``model`` said it was wrong."""
        query = (sa.select(feedback.c.verdict, sa.func.count()).where(*_filters(model, since))
                 .group_by(feedback.c.verdict))  # fmt: skip
        with self.engine.connect() as conn:
            counts = {verdict: int(n) for verdict, n in conn.execute(query)}
        return ErrorRate(counts.get("wrong", 0), counts.get("correct", 0), counts.get("unsure", 0))


def _complete(row: Row) -> Row:
    """``row`` with every column, a generated id and the current time where it has none."""
    out = {column.name: row.get(column.name) for column in feedback.c}
    out["id"] = out["id"] or new_id()
    out["created_at"] = time.time() if out["created_at"] is None else float(out["created_at"])
    return out


def _filters(model: str | None, since: float | None) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if model is not None:
        where.append(feedback.c.model == model)
    if since is not None:
        where.append(feedback.c.created_at >= since)
    return where
