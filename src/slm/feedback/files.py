"""Corrections as files: read CSV/TSV/JSONL made elsewhere (a labelling tool, a spreadsheet), write a labelled file.

Reading goes through :mod:`slm.data.stream`, a chunk at a time (its checks and messages: encoding, broken
CSV, an empty file), so memory stays flat however many rows a file holds. Every row is checked as the HTTP
endpoint checks a body; the first bad one is a one-line :class:`~slm.errors.DataError` naming the file and row.
A row without an id gets one from its content, so importing the same file twice stores each row once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slm.cells import csv_cell, csv_row, jsonable
from slm.errors import ConfigError, DataError
from slm.feedback.rows import MAX_ID, MAX_LABEL, MAX_NOTE, MAX_USER, VERDICTS, Row, settle
from slm.fileio import atomic_file

REQUIRED_COLUMNS = ("text", "label")
OPTIONAL_COLUMNS = ("predicted", "verdict", "id", "model", "version", "request_id", "note", "user_id", "created_at")
EXPORT_COLUMNS = ("text", "label", "predicted", "verdict", "model", "version", "id", "created_at")
EXPORT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_LIMITS = {"label": MAX_LABEL, "predicted": MAX_LABEL, "id": MAX_ID, "model": 200, "version": 64, "request_id": 64,
           "note": MAX_NOTE, "user_id": MAX_USER}  # fmt: skip


def read_corrections(path: str | Path, *, model: str | None = None, require_model: bool = False) -> Iterator[list[Row]]:
    """The rows of a corrections file, checked, a chunk (at most a few thousand rows) at a time.

    ``model``: the model of rows that name none (a file without a ``model`` column is about one model).
    ``require_model``: refuse a row whose model is still unknown (the store needs one; a reader may not).
    """
    from slm.data.columns import _find_column
    from slm.data.stream import open_table

    path = Path(path)
    table = open_table(path, text_col="text")  # checks the file whole first: encoding, structure, text column
    names: dict[str, str] = {"text": table.text_col or "text"}
    for name in (*REQUIRED_COLUMNS[1:], *OPTIONAL_COLUMNS):
        try:
            names[name] = _find_column(path, table.columns, name, name)
        except DataError:
            if name in REQUIRED_COLUMNS:
                raise DataError(f"{path}: no {name!r} column (the correct label of each text); a corrections "
                                f"file has the columns {', '.join(REQUIRED_COLUMNS)} and optionally "
                                f"{', '.join(OPTIONAL_COLUMNS)}") from None  # fmt: skip
    number = 0
    for chunk in table.chunks():
        rows = []
        for raw in chunk.rows:
            number += 1
            try:
                rows.append(_checked({name: raw.get(column) for name, column in names.items()}, model, require_model))
            except ValueError as exc:
                raise DataError(f"{path}: row {number:,}: {exc}") from None
        yield rows


def _checked(raw: dict[str, Any], model: str | None, require_model: bool) -> Row:
    """One file row as a store row; ValueError (its message names the field) for anything unusable."""
    from slm.data.columns import cell_text

    row: Row = {name: (cell_text(value).strip() or None) for name, value in raw.items() if name != "text"}
    text = cell_text(raw["text"])
    if not text.strip():
        raise ValueError("the text is empty")
    for name, limit in _LIMITS.items():
        value = row.get(name)
        if value is not None and len(value) > limit:
            raise ValueError(f"{name} is {len(value):,} characters long, more than {limit:,}")
    verdict = row.get("verdict")
    if verdict is not None and verdict.lower() not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)} (or empty)")
    predicted, label, verdict = settle(row.get("predicted"), row.get("label"), verdict and verdict.lower())
    row.update(text=text, predicted=predicted, label=label, verdict=verdict, model=row.get("model") or model)
    if require_model and row["model"] is None:
        raise ValueError("no model: add a 'model' column or name the model (--model NAME)")
    row["created_at"] = _timestamp(row.get("created_at"))
    row["id"] = row.get("id") or content_id(row)
    return row


def content_id(row: Row) -> str:
    """An id from what a row says: the same correction in two files, or a file imported twice, is one row."""
    fields = [row.get(name) for name in ("model", "text", "predicted", "label", "verdict")]
    return "f" + hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()[:31]


def _timestamp(value: str | None) -> float | None:
    """Epoch seconds from ISO 8601 (``2025-01-31T09:30:00Z``; no zone: UTC) or a number of epoch seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"created_at {value!r} is neither ISO 8601 nor epoch seconds") from None
        seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"created_at {value!r} is not a time")
    return seconds


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def export_format(output: Path) -> str:
    """The format a labelled file is written in, from its suffix."""
    fmt = EXPORT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{output}: write .csv, .tsv or .jsonl (the format follows the suffix)")
    if output.is_dir():
        raise ConfigError(f"{output} is a folder: name the file to write")
    return fmt


def write_labelled(chunks: Iterable[list[Row]], output: str | Path, *, raw_csv: bool = False) -> int:
    """Write rows as a labelled file (:data:`EXPORT_COLUMNS`), atomically; the number of rows written.

    Streams into a temporary file beside ``output`` that replaces it only when every row is written: an
    interrupted export leaves an earlier file as it was. CSV/TSV text cells are formula-neutralised
    (:func:`slm.cells.neutralise_formula`) unless ``raw_csv``; JSON lines keep every text exactly.
    """
    target = Path(output)
    fmt = export_format(target)
    written = 0
    delimiter = "\t" if fmt == "tsv" else ","
    with atomic_file(target, text=True) as handle:
        if fmt != "jsonl":
            handle.write(csv_row(EXPORT_COLUMNS, delimiter))
        for chunk in chunks:
            for row in chunk:
                record = {column: row.get(column) for column in EXPORT_COLUMNS}
                if record["created_at"] is not None:
                    record["created_at"] = iso(record["created_at"])
                if fmt == "jsonl":
                    handle.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")
                else:
                    handle.write(csv_row([csv_cell(v, raw=raw_csv) for v in record.values()], delimiter))
                written += 1
    return written
