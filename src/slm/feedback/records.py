"""The one reader of feedback for training: :func:`read_feedback` over a database or a corrections file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slm.feedback.rows import Row


@dataclass(frozen=True)
class FeedbackRecord:
    """One labelled text from feedback: ``label`` is the correct label (possibly one the model does not know).

    ``predicted``: the label the model gave, when known. ``verdict``: "correct", "wrong", or None (a label
    given without a verdict on the model). ``version``: the bundle version that answered, when known.
    ``created_at``: epoch seconds (UTC), None for a file row without a time.
    """

    id: str
    text: str
    label: str
    predicted: str | None
    verdict: str | None
    model: str | None
    version: str | None
    created_at: float | None


SQLITE_SUFFIXES = frozenset({".sqlite", ".sqlite3", ".db"})  # a path with one of these is a SQLite database


def read_feedback(source: str | Path, *, model: str | None = None) -> list[FeedbackRecord]:
    """Every usable correction in ``source``, oldest first where times are known.

    ``source``: a database URL (it contains ``://``: ``sqlite:///slm-feedback.sqlite``,
    ``postgresql+psycopg://...``), a SQLite file (``.sqlite``, ``.sqlite3``, ``.db``: the server's
    ``--feedback-db``) or a CSV/TSV/JSONL corrections file (:mod:`slm.feedback.files`).
    ``model``: only the rows about that model (in a file, rows that name no model count as its).
    Usable means with a correct label and a verdict other than "unsure": rows that only say "wrong", or
    whose labeller was unsure, teach nothing. Raises ConfigError for an unreachable database, DataError
    for a bad file (one line each).
    """
    text = str(source)
    if Path(text).suffix.lower() in SQLITE_SUFFIXES and "://" not in text:  # the server's --feedback-db file
        from slm.storage.sql import database_url

        text = database_url(text)
    database = "://" in text
    rows = _database_rows(text, model) if database else _file_rows(Path(text), model)
    records = [_record(row) for row in rows if row.get("label") is not None and row.get("verdict") != "unsure"]
    if not database:
        records = list({record.id: record for record in records}.values())  # a file may repeat a row
    return records


def _database_rows(url: str, model: str | None) -> Iterator[Row]:
    from slm.feedback.store import FeedbackStore
    from slm.storage.sql import sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.exists():  # never create an empty database just to read it
        from slm.errors import ConfigError

        raise ConfigError(f"feedback: {path} does not exist (no feedback stored there yet)")
    store = FeedbackStore.open(url)
    try:
        for chunk in store.chunks(model=model):
            yield from chunk
    finally:
        store.close()


def _file_rows(path: Path, model: str | None) -> Iterator[Row]:
    from slm.feedback.files import read_corrections

    for chunk in read_corrections(path, model=model):
        yield from (row for row in chunk if model is None or row["model"] == model)


def _record(row: Row) -> FeedbackRecord:
    return FeedbackRecord(id=row["id"], text=row["text"], label=row["label"], predicted=row.get("predicted"),
                          verdict=row.get("verdict"), model=row.get("model"), version=row.get("version"),
                          created_at=row.get("created_at"))  # fmt: skip
