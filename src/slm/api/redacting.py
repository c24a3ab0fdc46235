"""``redact_file``: replace the personal data in a file's texts, a chunk at a time (``slm redact``).

Tables (CSV, TSV, JSON lines, Parquet) are read with :mod:`slm.data.stream`'s checked, chunked reader
and written through its atomic writers, so memory stays bounded whatever the file's size and an
interrupted run leaves an earlier output as it was. Plain text (standard input, or a ``.txt`` file) is
redacted line by line. Only the chosen text columns change; every other cell is copied as read. Needs no
extra: redaction is part of every install.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from slm.errors import ConfigError, DataError
from slm.privacy import Redactor

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = (".txt", ".text", ".log")  # read as one text per line
MAX_KEY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RedactionRun:
    """What :func:`redact_file` did: rows (lines) read, rows changed, spans replaced per type, where to."""

    rows: int
    changed: int
    counts: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    output: str | None = None


def read_key(path: str | Path) -> bytes:
    """The pseudonym key in ``path`` (its bytes, at least 16 of them, as written: keep it secret)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise ConfigError(f"{path}: a key file holds at most {MAX_KEY_BYTES} bytes")
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such key file (make one: head -c 32 /dev/urandom > {path})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a key file") from None
    if len(key.strip()) < 16:
        raise ConfigError(f"{path}: a pseudonym key needs at least 16 bytes (head -c 32 /dev/urandom > {path})")
    return key


def redact_file(
    input: str | Path | IO[str],
    output: str | Path | None = None,
    *,
    columns: Sequence[str] | None = None,
    mode: str = "placeholder",
    key: bytes | None = None,
    types: Sequence[str] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> RedactionRun:
    """Redact ``input`` into ``output`` (None or ``'-'``: standard output).

    ``input``: a CSV/TSV/JSONL/Parquet path (the texts of ``columns``, default the text column found by
    name, are redacted; other cells are copied), a ``.txt`` path or ``'-'``/an open text stream (one text
    per line, written as lines). A table's output format follows ``output``'s extension (JSON lines on
    standard output when there is none). ``mode``/``key``/``types``: as :class:`slm.privacy.Redactor`.
    ``on_rows(done)`` is called after each chunk.
    """
    redactor = Redactor(types, mode, key)
    if mode == "pseudonym" and key is None:
        logger.warning("note: no --key-file: pseudonyms use a random key and will not match another run's")
    name = None if isinstance(input, str | Path) and str(input) == "-" else input
    if name is None or not isinstance(name, str | Path) or Path(str(name)).suffix.lower() in TEXT_EXTENSIONS:
        if columns:
            raise ConfigError("--column applies to tables (CSV, TSV, JSONL, Parquet), not to text lines")
        return _redact_lines(redactor, input, output, on_rows)
    return _redact_table(redactor, Path(str(name)), output, columns, on_rows)


def _redact_table(
    redactor: Redactor,
    path: Path,
    output: str | Path | None,
    columns: Sequence[str] | None,
    on_rows: Callable[[int], None] | None,
) -> RedactionRun:
    from slm.api.predicting import output_format
    from slm.data.stream import open_table, writing

    fmt = output_format(output)
    table = open_table(path, columns[0] if columns else None)
    wanted = list(dict.fromkeys(columns or [table.text_col or ""]))
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(table.columns)})")
    counts: Counter[str] = Counter()
    changed = rows = 0
    target = None if output is None or str(output) == "-" else str(output)
    try:
        # raw_csv: a redacted file keeps every other cell exactly as read (no formula quoting added).
        with writing(fmt, target, table.columns, raw_csv=True, json_columns=()) as write:
            for chunk in table.chunks():
                out = []
                for row in chunk.rows:
                    copy = dict(row)
                    touched = False
                    for column in wanted:
                        value = copy.get(column)
                        if isinstance(value, str) and value:
                            copy[column], spans = redactor.redact_spans(value)
                            counts.update(s.type for s in spans)
                            touched = touched or bool(spans)
                    changed += touched
                    out.append(copy)
                write(out)
                rows += len(out)
                if on_rows is not None:
                    on_rows(len(out))
    finally:
        table.close()
    return RedactionRun(rows, changed, dict(counts), wanted, target)


def _redact_lines(
    redactor: Redactor,
    input: str | Path | IO[str],
    output: str | Path | None,
    on_rows: Callable[[int], None] | None,
) -> RedactionRun:
    from slm.data.files import EXTENSIONS

    target = None if output is None or str(output) == "-" else str(output)
    if target is not None and Path(target).suffix.lower() in EXTENSIONS:
        raise ConfigError(f"{target}: text lines are written as text; name the output .txt (or read a table instead)")
    counts: Counter[str] = Counter()
    changed = rows = 0
    with _text_source(input) as lines, _text_sink(target) as write:
        batch: list[str] = []
        for line in lines:
            text, ending = (line[:-1], "\n") if line.endswith("\n") else (line, "")
            redacted, spans = redactor.redact_spans(text)
            counts.update(s.type for s in spans)
            changed += bool(spans)
            rows += 1
            batch.append(redacted + ending)
            if len(batch) >= 1024:
                write(batch)
                if on_rows is not None:
                    on_rows(len(batch))
                batch = []
        if not rows:  # before the output is put in place: an empty input leaves an earlier output as it was
            raise DataError(f"{_where(input)}: no lines to redact")
        write(batch)
        if on_rows is not None and batch:
            on_rows(len(batch))
    return RedactionRun(rows, changed, dict(counts), [], target)


def _where(input: str | Path | IO[str]) -> str:
    return str(input) if isinstance(input, str | Path) and str(input) != "-" else "stdin"


@contextlib.contextmanager
def _text_source(input: str | Path | IO[str]) -> Iterator[Iterator[str]]:
    """Lines of a UTF-8 text file or stream, each read with the table reader's bound."""
    from slm.data.stream import bounded_lines

    where = _where(input)
    if where != "stdin":
        path = Path(str(input))
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        handle: Any = path.open(encoding="utf-8-sig", newline="\n")
    else:
        handle = sys.stdin if isinstance(input, str | Path) else input
        if handle is None:
            raise DataError("no standard input to read from")

    def lines() -> Iterator[str]:
        for _, line in bounded_lines(handle, where):
            yield line

    try:
        yield lines()
    finally:
        if where != "stdin":
            handle.close()


@contextlib.contextmanager
def _text_sink(target: str | None) -> Iterator[Callable[[list[str]], None]]:
    """Write lines to standard output as they come, or atomically to ``target``."""
    if target is None:
        yield sys.stdout.writelines
        sys.stdout.flush()
        return
    from slm.fileio import atomic_file

    with atomic_file(Path(target), text=True) as handle:
        yield handle.writelines
