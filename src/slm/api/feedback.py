"""``import_feedback`` and ``export_feedback``: corrections between files and the feedback database, as
``slm feedback import|export`` do.

The database is the one ``slm serve`` stores feedback in (``--feedback-db``): a SQLite file by default, or
PostgreSQL by URL. Both need SQLAlchemy, from the serve extra; reading and writing the files needs nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm.errors import ConfigError, DataError
from slm.extras import require


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows read from the file; inserted, already stored (duplicates), refused (conflicts)."""

    rows: int
    inserted: int
    duplicates: int
    conflicts: int
    database: str  # the URL without its password


@dataclass(frozen=True)
class ExportReport:
    rows: int
    skipped: int  # rows with no correct label, or whose verdict was "unsure" (written only with everything=True)
    output: Path


def import_feedback(file: str | Path, db: str | Path, *, model: str | None = None, redact: bool = True) -> ImportReport:
    """Store the corrections in ``file`` (CSV/TSV/JSONL) in the feedback database ``db`` (URL or SQLite file).

    ``redact``: replace personal data (e-mail addresses, phone, card and ID numbers...) in the texts, notes
    and user ids before they are stored, as the server does (:mod:`slm.privacy`).
    ``model``: the model of rows that name none. The whole file is checked before anything is stored, so a
    bad row (one-line DataError naming it) changes nothing. Rows already stored under the same id with the
    same content count as duplicates (importing a file twice is harmless); a row whose id is stored with
    other content is refused: a DataError once the others are stored, counting them.
    """
    require("sqlalchemy", "serve", what="slm feedback import")
    from slm.feedback.files import read_corrections
    from slm.feedback.store import AddResult, FeedbackStore
    from slm.storage.sql import database_url, safe_url

    url = database_url(db)
    rows = sum(len(chunk) for chunk in read_corrections(file, model=model, require_model=True))
    from slm.privacy import Redactor

    store = FeedbackStore.open(url, redactor=Redactor() if redact else None)
    try:
        result = AddResult()
        for chunk in read_corrections(file, model=model, require_model=True):
            result += store.add_many(chunk)
    finally:
        store.close()
    if result.conflicts:
        shown = ", ".join(repr(i) for i in result.conflict_ids)
        raise DataError(
            f"{file}: {result.conflicts:,} row(s) conflict with feedback stored under the same id ({shown}) and "
            f"were not imported; the other rows were ({result.inserted:,} new, {result.duplicates:,} already stored)"
        )
    return ImportReport(rows, result.inserted, result.duplicates, result.conflicts, safe_url(url))


def export_feedback(
    db: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    since: str | float | None = None,
    everything: bool = False,
    raw_csv: bool = False,
) -> ExportReport:
    """Write the feedback in ``db`` as a labelled file (``.csv``, ``.tsv`` or ``.jsonl``: by the suffix), atomically.

    Columns text, label, predicted, verdict, model, version, id, created_at (ISO 8601, UTC), oldest first.
    ``model``: only that model's rows. ``since``: only rows from that long ago on (``7d``, ``12h``; a bare
    number is days). Written: the rows with a correct label and a verdict other than "unsure" (what
    ``slm update`` trains on), or every row with ``everything`` (for labelling the rest). CSV text cells
    are formula-neutralised unless ``raw_csv``.
    """
    require("sqlalchemy", "serve", what="slm feedback export")
    from slm.durations import parse_duration
    from slm.feedback.files import export_format, write_labelled
    from slm.feedback.store import FeedbackStore
    from slm.storage.sql import database_url, sqlite_file

    target = Path(output)
    export_format(target)  # refuse a bad suffix before opening anything
    after = None if since is None else time.time() - parse_duration(since, bare_unit="d", what="--since")
    url = database_url(db)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigError(f"feedback: {path} does not exist (no feedback stored there yet; 'slm serve' makes it "
                          "on the first feedback, at --feedback-db)")  # fmt: skip
    store = FeedbackStore.open(url)
    skipped = 0

    def wanted() -> Iterator[list[dict[str, Any]]]:
        nonlocal skipped
        for chunk in store.chunks(model=model, since=after):
            kept = [row for row in chunk if everything or (row["label"] is not None and row["verdict"] != "unsure")]
            skipped += len(chunk) - len(kept)
            yield kept

    try:
        rows = write_labelled(wanted(), target, raw_csv=raw_csv)
    finally:
        store.close()
    return ExportReport(rows, skipped, target)


def purge_feedback(db: str | Path, older_than: str | float) -> int:
    """Delete the feedback stored more than ``older_than`` ago (``90d``, ``12h``; a bare number is days); how many.

    What ``slm serve`` does at start and hourly with ``--feedback-retention``, for a database no server
    is purging (or to shorten the retention once).
    """
    require("sqlalchemy", "serve", what="slm feedback purge")
    from slm.durations import parse_duration
    from slm.feedback.store import FeedbackStore
    from slm.storage.sql import database_url, sqlite_file

    seconds = parse_duration(older_than, bare_unit="d", what="--older-than")
    url = database_url(db)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigError(f"feedback: {path} does not exist (no feedback stored there)")
    store = FeedbackStore.open(url)
    try:
        return store.purge(seconds)
    finally:
        store.close()
