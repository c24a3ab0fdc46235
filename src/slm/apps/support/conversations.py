"""The support assistants' conversation log: every turn in one SQLite file, for labelling later.

Standard-library ``sqlite3`` only (the export command reads it without the server). One connection
guarded by a lock, used from worker threads only: the server writes each batch of turns in the
thread that answered it, in one transaction, and reads for ``/v1/support/unanswered`` off the
event loop too. WAL mode lets ``slm app support unanswered`` read while the server writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any

from slm.errors import ConfigError
from slm.privacy import Redactor

TABLE = "turns"
COLUMNS = (
    "ts", "conversation_id", "assistant", "question", "decision", "reason", "intent", "confidence", "faq_id",
    "similarity", "answer",
)  # fmt: skip
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id              INTEGER PRIMARY KEY,
    ts              TEXT NOT NULL,  -- UTC, ISO 8601 with milliseconds: 2025-01-31T12:00:00.123Z
    conversation_id TEXT NOT NULL,
    assistant       TEXT NOT NULL,  -- the served name
    question        TEXT NOT NULL,
    decision        TEXT NOT NULL,  -- intent | faq | handoff
    reason          TEXT,           -- e.g. out_of_scope, intent_requires_human, missing_slot:amount
    intent          TEXT,           -- the predicted intent, even when out of scope
    confidence      REAL,
    faq_id          TEXT,
    similarity      REAL,
    answer          TEXT
);
"""
INDEXES = f"""
CREATE INDEX IF NOT EXISTS {TABLE}_conversation ON {TABLE} (conversation_id, id);
CREATE INDEX IF NOT EXISTS {TABLE}_decision ON {TABLE} (decision, id);
"""
UNANSWERED = "handoff"


def utc_now() -> str:
    return utc_iso(time.time())


def utc_iso(seconds: float) -> str:
    """``seconds`` (epoch) as the log's timestamps: ISO 8601 UTC with milliseconds, ordered as text."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


@dataclass(frozen=True, slots=True)
class Turn:
    """One question and the assistant's reply, as stored (field order = :data:`COLUMNS`)."""

    ts: str
    conversation_id: str
    assistant: str
    question: str
    decision: str
    reason: str | None
    intent: str | None
    confidence: float | None
    faq_id: str | None
    similarity: float | None
    answer: str | None

    @classmethod
    def of(cls, reply: dict[str, Any], *, assistant: str, conversation_id: str, question: str) -> Turn:
        """The turn for ``reply`` (``Reply.to_dict()``), stamped now."""
        intent = reply.get("intent") or {}
        faq = reply.get("faq") or {}
        return cls(utc_now(), conversation_id, assistant, question, reply["decision"], reply.get("reason"),
                   intent.get("label"), intent.get("confidence"), faq.get("id"), faq.get("similarity"),
                   reply.get("answer"))  # fmt: skip


class ConversationLog:
    """An open conversation log; :meth:`open` creates the file and its table on first use."""

    def __init__(self, path: Path, connection: sqlite3.Connection, redactor: Redactor | None = None) -> None:
        self.path, self._db, self.redactor = Path(path), connection, redactor
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, path: str | Path, *, not_inside: Iterable[Path] = (), redactor: Redactor | None = None
    ) -> ConversationLog:
        """Open (or create) the log at ``path`` for writing; ConfigError, in one line, when it cannot be.

        ``not_inside``: folders the file must stay out of (served bundles are hash-verified). ``redactor``:
        replaces personal data in each turn's question, answer and conversation id before it is stored.
        """
        path = Path(path)
        where = path.resolve()
        for folder in not_inside:
            if where.is_relative_to(Path(folder).resolve()):
                raise ConfigError(f"the support log {path} would be written inside the bundle {folder}: "
                                  "give --support-db a path outside it")  # fmt: skip
        if path.is_dir():
            raise ConfigError(f"cannot open the support log {path}: it is a folder (give --support-db a file)")
        if not where.parent.is_dir():
            raise ConfigError(f"cannot open the support log {path}: folder {path.parent} does not exist")
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the support log {path}: {exc}") from None
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"the file system does not support WAL mode (journal mode {mode})")
            db.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; never corrupt in WAL mode
            db.executescript(SCHEMA)
            _check_columns(db, path)  # an older or foreign 'turns' table is refused, not altered
            db.executescript(INDEXES)
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"cannot open the support log {path}: {exc}") from None
        except ConfigError:
            db.close()
            raise
        return cls(path, db, redactor)

    def record(self, turns: Sequence[Turn]) -> None:
        """Store ``turns`` in one transaction (call from a worker thread, never the event loop)."""
        if not turns:
            return
        sql = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        if self.redactor is not None:
            turns = [self._redacted(turn) for turn in turns]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, [astuple(turn) for turn in turns])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _redacted(self, turn: Turn) -> Turn:
        assert self.redactor is not None
        redact = self.redactor.redact
        answer = None if turn.answer is None else redact(turn.answer)  # a template may echo the customer's words
        return replace(turn, question=redact(turn.question), answer=answer,
                       conversation_id=redact(turn.conversation_id))  # fmt: skip

    def purge(self, older_than_s: float, *, now: float | None = None) -> int:
        """Delete the turns logged more than ``older_than_s`` seconds ago (customers' words expire); how many went."""
        with self._lock:
            return delete_older(self._db, older_than_s, now=now)

    def unanswered(self, *, limit: int, assistant: str | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` handed-off turns, newest first."""
        with self._lock:
            return unanswered_rows(self._db, limit=limit, assistant=assistant, newest_first=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def delete_older(db: sqlite3.Connection, older_than_s: float, *, now: float | None = None) -> int:
    """Delete the turns of ``db`` older than ``older_than_s`` seconds in one transaction; how many went."""
    cutoff = utc_iso((time.time() if now is None else now) - older_than_s)
    with db:
        return int(db.execute(f"DELETE FROM {TABLE} WHERE ts < ?", (cutoff,)).rowcount)


def purge_log(path: str | Path, older_than_s: float) -> int:
    """Delete the turns older than ``older_than_s`` seconds from the log at ``path`` (the server may be running)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no support log at {path} ('slm serve' writes it, see --support-db)")
    try:
        db = sqlite3.connect(path, timeout=10.0)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the support log {path}: {exc}") from None
    try:
        _check_columns(db, path)
        return delete_older(db, older_than_s)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot purge the support log {path}: {exc}") from None
    finally:
        db.close()


def unanswered_rows(
    db: sqlite3.Connection, *, limit: int | None = None, assistant: str | None = None, newest_first: bool = False
) -> list[dict[str, Any]]:
    """Handed-off turns as dicts (id, ts, conversation_id, assistant, question, reason, intent, confidence)."""
    sql = f"SELECT id, ts, conversation_id, assistant, question, reason, intent, confidence FROM {TABLE} " \
          "WHERE decision = ?"  # fmt: skip
    params: list[Any] = [UNANSWERED]
    if assistant is not None:
        sql += " AND assistant = ?"
        params.append(assistant)
    sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = db.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def read_unanswered(path: str | Path, *, assistant: str | None = None) -> list[dict[str, Any]]:
    """Every handed-off turn of the log at ``path``, oldest first, read-only (the server may be writing)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no support log at {path} ('slm serve' writes it, see --support-db)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the support log {path}: {exc}") from None
    try:
        _check_columns(db, path)
        return unanswered_rows(db, assistant=assistant)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the support log {path}: {exc}") from None
    finally:
        db.close()


def _check_columns(db: sqlite3.Connection, path: Path) -> None:
    present = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
    if not present:
        raise ConfigError(f"{path} is not a support log: it has no '{TABLE}' table")
    missing = [name for name in COLUMNS if name not in present]
    if missing:
        raise ConfigError(f"{path} holds a '{TABLE}' table without the columns {', '.join(missing)}: "
                          "it is not a support log of this version")  # fmt: skip
