"""``slm predict``'s input and output, a chunk at a time: memory stays flat however many rows a file has.

Reading a whole file, then predicting it, then building the whole output in memory peaked at 4.8 GB for
200,000 rows (issue 21; bench/predict_memory.py). Here a file is read twice, one line at a time: a first
pass checks it (encoding, CSV structure, JSON, the text column) and counts its rows before the model is
loaded, as the whole-file reader did; the second yields chunks of at most CHUNK_ROWS rows or CHUNK_CHARS
characters to predict.
Predictions are written as they come to a temporary file beside the target, renamed into place at the
end (a failed or interrupted run leaves an earlier output untouched). Standard input is copied to an
anonymous temporary file as it is checked, then read the same way.

One line longer than MAX_LINE_CHARS characters (and one CSV field, even across quoted line breaks) is
refused with a one-line DataError after reading at most that much, never read whole: the model reads
only the start of a text anyway (:mod:`slm.bundle.textlimit`), and a row cannot be cut without breaking
the CSV or JSON around it. The same messages as :mod:`slm.data.loading` name the file, line and fix.

CSV and TSV output neutralise spreadsheet formulas (:func:`slm.cells.neutralise_formula`) unless asked for
raw cells.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from slm.cells import csv_cell, csv_row, jsonable, quoted
from slm.data.prediction_columns import Layout, Predicted
from slm.errors import DataError

# The longest line (and CSV field) read; a longer one is refused. 8 Mi characters is over 1,000 times the
# longest text of the bundled corpora and 160 times what the model reads of a text (51,300 characters).
MAX_LINE_CHARS = 8 * 1024 * 1024
# Rows predicted at a time, and the characters that close a chunk early (long texts). The transformer sorts a
# chunk's texts by length into batches: measured on 20,000 BANKING77 rows, 4,096-row chunks took 2-5% more
# time than one sort of everything, 1,024-row chunks 12-20% more.
CHUNK_ROWS = 4096
CHUNK_CHARS = 4 * 1024 * 1024
# Rows decoded (a dict of every label's probability each) and written at a time: with 77 labels, decoding
# whole 4,096-row chunks peaked 49 MB higher than 1,024-row ones.
WRITE_ROWS = 512
# Rows the text column is detected from (the whole-file reader looked at the first 2,000).
SAMPLE_ROWS = 2000
# Appended after the last line of a CSV: it ends up inside a field only when a quote was never closed.
_END = "\ue000slm:end-of-input\ue000"

Row = dict[str, Any]


def json_line(row: Row) -> str:
    return json.dumps(jsonable(row), ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- reading lines


def _too_long(name: object, lineno: int, what: str = "line") -> DataError:
    return DataError(
        f"{name}: {what} {lineno:,} is longer than {MAX_LINE_CHARS:,} characters, the most slm reads "
        "of one line; shorten that text (the model reads only its start) or split it across rows"
    )


def _utf8_error(path: Path) -> DataError:
    """The first bytes of ``path`` that are not UTF-8, found by decoding it again a block at a time."""
    from slm.data.files import not_utf8

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, line, line_start = 0, 1, 0
    with path.open("rb") as handle:
        head = handle.read(65536)
        handle.seek(0)
        while True:
            block = handle.read(1 << 20)
            try:
                decoder.decode(block[3:] if offset == 0 and block.startswith(codecs.BOM_UTF8) else block,
                               final=not block)  # fmt: skip
            except UnicodeDecodeError as exc:
                at = offset + len(block) - len(exc.object) + exc.start
                handle.seek(line_start)
                before = handle.read(at - line_start)
                line += before.count(b"\n")
                column = at - (line_start + before.rfind(b"\n") + 1) + 1
                handle.seek(at)
                bad = handle.read(max(1, min(exc.end - exc.start, 4)))
                return not_utf8(path, head, bad, at, line, column)
            if not block:
                return DataError(f"{path}: is not valid UTF-8; re-save the file as UTF-8")
            line += block.count(b"\n")
            if b"\n" in block:
                line_start = offset + block.rfind(b"\n") + 1
            offset += len(block)


class _Lines:
    """Decoded lines of a UTF-8 file (a leading BOM dropped), each at most MAX_LINE_CHARS characters.

    ``newline`` as for :func:`open`: ``""`` keeps every line ending (what the csv module wants), ``"\\n"``
    splits on LF only (JSON lines, like the whole-file reader). ``lineno`` is the last line's number.
    """

    def __init__(self, path: Path, newline: str) -> None:
        self.path, self.newline, self.lineno, self.blank = path, newline, 0, True

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as raw:
            handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=self.newline)
            while True:
                try:
                    line = handle.readline(MAX_LINE_CHARS + 1)
                except UnicodeDecodeError:
                    raise _utf8_error(self.path) from None
                if not line:
                    return
                self.lineno += 1
                if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
                    raise _too_long(self.path, self.lineno)
                if self.blank and line.strip():
                    self.blank = False
                yield line


# ---------------------------------------------------------------- tables


@dataclass
class Chunk:
    """Rows (dicts, input columns first) and the text of each, in file order."""

    rows: list[Row]
    texts: list[str]


@dataclass
class Table:
    """An input checked end to end: its columns, text column and row count; :meth:`chunks` reads it again."""

    name: str
    fmt: str
    columns: list[str]
    text_col: str | None
    rows: int
    read: Callable[[], Iterator[tuple[Row, str, int]]] = field(repr=False)
    close: Callable[[], None] = field(default=lambda: None, repr=False)

    def chunks(self) -> Iterator[Chunk]:
        """Chunks of at most CHUNK_ROWS rows or CHUNK_CHARS characters (at least one row each)."""
        rows: list[Row] = []
        texts: list[str] = []
        chars = 0
        for row, text, size in self.read():
            rows.append(row)
            texts.append(text)
            chars += size
            if len(rows) >= CHUNK_ROWS or chars >= CHUNK_CHARS:
                yield Chunk(rows, texts)
                rows, texts, chars = [], [], 0
        if rows:
            yield Chunk(rows, texts)


def open_table(path: str | Path, text_col: str | None = None) -> Table:
    """A CSV/TSV/JSONL/Parquet file to predict on, checked with the whole-file reader's checks and messages."""
    from slm.data.files import _check_file, _check_not_empty, _resolve_format

    path = Path(path)
    _check_file(path)
    fmt = _resolve_format(path, None)
    _check_not_empty(path)
    if fmt == "parquet":
        return _parquet_table(path, text_col)
    scan = _jsonl_objects if fmt == "jsonl" else _csv_reader(fmt)
    columns: dict[str, None] = {}
    sample: list[Row] = []
    sample_chars = rows = 0
    lines = _Lines(path, "\n" if fmt == "jsonl" else "")
    for row, size in scan(path, lines, None):
        columns.update(dict.fromkeys(row))
        rows += 1
        if len(sample) < SAMPLE_ROWS and sample_chars < CHUNK_CHARS:
            sample.append(row)
            sample_chars += size
    if lines.blank:
        raise DataError(f"{path}: file is empty (only whitespace)")
    names = list(columns) if fmt == "jsonl" else _csv_header(path, fmt)
    if not rows:
        what = "JSON lines" if fmt == "jsonl" else "data rows"
        raise DataError(f"{path}: has no {what} (columns: {_column_list(names)})")
    column = _text_column(path, names, sample, text_col)

    def read() -> Iterator[tuple[Row, str, int]]:
        from slm.data.columns import cell_text

        for row, size in scan(path, _Lines(path, lines.newline), names):
            yield row, cell_text(row.get(column)), size

    return Table(str(path), fmt, names, column, rows, read)


def _column_list(columns: list[str]) -> str:
    from slm.data.files import _column_list

    return _column_list(columns)


def _text_column(path: Path, columns: list[str], sample: list[Row], text_col: str | None) -> str:
    """The text column, found from the first rows exactly as the whole-file reader finds it."""
    from slm.data.columns import SAMPLE_ROWS, _find_column, detect_text_column

    if text_col is not None:
        return _find_column(path, columns, text_col, "text")
    return detect_text_column(path, columns, lambda c: [row.get(c) for row in sample[:SAMPLE_ROWS]], set())


def _csv_header(path: Path, fmt: str) -> list[str]:
    from slm.data.columns import _unique_names

    for fields, _ in _csv_records(path, _Lines(path, ""), fmt):
        return _unique_names(fields)
    raise DataError(f"{path}: file is empty")


def _csv_records(path: Path, lines: _Lines, fmt: str) -> Iterator[tuple[list[str], int]]:
    """Every non-blank record of a CSV/TSV and the line it starts on; DataError for an unclosed quote or a huge field.

    Line numbers are physical lines (the whole-file reader counted records: after a quoted line break, one less).
    """
    # The csv module's field limit is per process (default 131,072): a longer field was fine before.
    csv.field_size_limit(MAX_LINE_CHARS)
    reader = csv.reader(itertools.chain(lines, [_END]), delimiter="," if fmt == "csv" else "\t")
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger" in str(exc):
                raise _too_long(path, start, "a field starting on line") from None
            raise DataError(f"{path}: cannot be parsed as {fmt.upper()} near line {start} ({exc})") from None
        if fields == [_END]:
            return
        if fields and fields[-1].endswith(_END):
            raise DataError(f"{path}: unclosed quote starting near line {start} (malformed {fmt.upper()})")
        at, start = start, reader.line_num + 1
        # pandas skipped empty and whitespace-only lines; keep doing so.
        if fields and (len(fields) > 1 or fields[0].strip(" \t")):
            yield fields, at


def _csv_reader(fmt: str) -> Callable[[Path, _Lines, list[str] | None], Iterator[tuple[Row, int]]]:
    def rows(path: Path, lines: _Lines, names: list[str] | None) -> Iterator[tuple[Row, int]]:
        from slm.data.columns import _unique_names

        records = _csv_records(path, lines, fmt)
        for header, _ in records:
            names = names or _unique_names(header)
            width = len(header)
            for fields, line in records:
                if len(fields) > width:
                    raise DataError(
                        f"{path}: line {line} has {len(fields)} fields but the header has {width}; quote text "
                        f"that contains {'commas' if fmt == 'csv' else 'tabs'} (malformed {fmt.upper()} row)"
                    )
                values: list[str | None] = [*fields, *([None] * (width - len(fields)))]
                yield dict(zip(names, values, strict=True)), sum(map(len, fields))
            return

    return rows


def _jsonl_objects(path: Path, lines: _Lines, names: list[str] | None) -> Iterator[tuple[Row, int]]:
    """One object per line (blank lines skipped); with ``names``, every row has those keys (missing: None)."""
    for line in lines:
        if not line.strip():
            continue
        obj = _json_value(line.removesuffix("\n"), path, lines.lineno)  # columns in messages as before
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lines.lineno} is a JSON {type(obj).__name__}, expected an object {{...}}")
        yield (obj if names is None else {name: obj.get(name) for name in names}), len(line)


def _json_value(line: str, where: object, lineno: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: line {lineno} is not valid JSON (nested too deeply)") from None


def _parquet_table(path: Path, text_col: str | None) -> Table:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        first = next(parquet.iter_batches(batch_size=SAMPLE_ROWS), None)
    except Exception as exc:  # pyarrow raises many types for corrupt or non-Parquet files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as Parquet ({first_line})") from None
    names = [str(c) for c in parquet.schema_arrow.names]
    rows = parquet.metadata.num_rows
    if not rows or first is None:
        raise DataError(f"{path}: has no data rows (columns: {_column_list(names)})")
    sample = first.to_pandas()
    sample.columns = names
    column = _text_column(path, names, sample.to_dict(orient="records"), text_col)
    # Rows per batch from the file's average row size, so a batch of long texts stays near CHUNK_CHARS.
    size = sum(parquet.metadata.row_group(i).total_byte_size for i in range(parquet.num_row_groups))
    batch = max(1, min(CHUNK_ROWS, CHUNK_CHARS * rows // max(size, 1)))

    def read() -> Iterator[tuple[Row, str, int]]:
        from slm.data.columns import cell_text

        for part in pq.ParquetFile(path).iter_batches(batch_size=batch):
            frame = part.to_pandas()
            frame.columns = names
            for row in frame.to_dict(orient="records"):
                yield row, cell_text(row[column]), CHUNK_CHARS // batch

    return Table(str(path), "parquet", names, column, rows, read)


# ---------------------------------------------------------------- standard input


def open_stdin(stream: IO[str], text_col: str | None = None) -> Table:
    """JSON lines from ``stream``: each an object with a text field, or a JSON string.

    The lines are checked and copied to an anonymous temporary file as they arrive, so the output's
    columns (every key of every line) are known before the first prediction, with flat memory.
    """
    spool = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="\n")  # noqa: SIM115 (Table.close closes it)
    try:
        columns: dict[str, None] = {}
        rows = 0
        for lineno, line in _stdin_lines(stream):
            row, _ = _stdin_row(line, lineno, text_col)
            columns.update(dict.fromkeys(row))
            spool.write(line if line.endswith("\n") else line + "\n")
            rows += 1
        if not rows:
            raise DataError("stdin: no input lines (send one JSON object or string per line)")
    except BaseException:
        spool.close()
        raise

    def read() -> Iterator[tuple[Row, str, int]]:
        spool.seek(0)
        for lineno, line in enumerate(iter(spool.readline, ""), start=1):
            row, text = _stdin_row(line, lineno, text_col)
            yield row, text, len(line)

    return Table("stdin", "stdin", list(columns), text_col, rows, read, spool.close)


def bounded_lines(stream: IO[str], where: str) -> Iterator[tuple[int, str]]:
    """Every line of a text stream with its number, each read with a bound (memory stays flat).

    A line longer than ``MAX_LINE_CHARS`` or not valid UTF-8 is a one-line ``DataError`` naming ``where``.
    """
    for lineno in itertools.count(1):
        try:
            line = stream.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError:
            raise DataError(f"{where}: line {lineno} is not valid UTF-8; send UTF-8 text") from None
        if not line:
            return
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            raise _too_long(where, lineno)
        yield lineno, line


def _stdin_lines(stream: IO[str]) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers, each read with a bound."""
    return ((lineno, line) for lineno, line in bounded_lines(stream, "stdin") if line.strip())


def _stdin_row(line: str, lineno: int, text_col: str | None) -> tuple[Row, str]:
    """One stdin line as (row, text): the text field is ``text_col``, a text-like key, or the only string."""
    from slm.data.columns import TEXT_NAMES

    obj = _json_value(line, "stdin", lineno)
    if isinstance(obj, str):
        obj = {text_col or "text": obj}
    if not isinstance(obj, dict):
        raise DataError(
            f'stdin: line {lineno} is a JSON {type(obj).__name__}; expected an object {{"text": ...}} or a JSON string'
        )
    key = text_col
    if key is None:
        found = [k for k in obj if k.strip().lower() in TEXT_NAMES]
        key = found[0] if len(found) == 1 else None
        if key is None:
            strings = [k for k, v in obj.items() if isinstance(v, str)]
            key = strings[0] if len(strings) == 1 else None
    if key is None or key not in obj:
        want = repr(text_col) if text_col else "'text'"
        raise DataError(f"stdin: line {lineno} has no {want} field (keys: {', '.join(map(repr, obj))}); "
                        "pass --text-col")  # fmt: skip
    value = obj[key]
    return obj, "" if value is None else str(value)


# ---------------------------------------------------------------- writing


class _Sink:
    """Writes rows to a staged file; :meth:`finish` makes it complete, :meth:`discard` removes it.

    :meth:`write` takes whole rows; :meth:`write_predicted` input rows and their predictions as columns
    (:class:`Predicted`), the same output without a dict of every label's probability per row.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rows: list[Row]) -> None:
        raise NotImplementedError

    def write_predicted(self, rows: list[Row], predicted: Predicted) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Flush everything into ``self.path``."""

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _TextSink(_Sink):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.handle = path.open("w", encoding="utf-8", newline="")

    def finish(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def discard(self) -> None:
        self.handle.close()
        super().discard()


class _JsonlSink(_TextSink):
    def write(self, rows: list[Row]) -> None:
        self.handle.writelines(json_line(row) for row in rows)

    def write_predicted(self, rows: list[Row], predicted: Predicted) -> None:
        self.handle.writelines(predicted.json_lines(rows))


class _StdoutSink(_Sink):
    """JSON lines on standard output, as they come (nothing staged)."""

    def __init__(self) -> None:
        pass

    def write(self, rows: list[Row]) -> None:
        sys.stdout.writelines(json_line(row) for row in rows)

    def write_predicted(self, rows: list[Row], predicted: Predicted) -> None:
        sys.stdout.writelines(predicted.json_lines(rows))

    def finish(self) -> None:
        sys.stdout.flush()


class _CsvSink(_TextSink):
    """CSV/TSV; probabilities (and a multi-label bundle's labels) are JSON strings, as before."""

    def __init__(
        self, path: Path, fmt: str, columns: list[str], multi_label: bool, raw: bool, json_columns: Any = None
    ) -> None:
        super().__init__(path)
        self.columns, self.raw = columns, raw
        if json_columns is None:  # predictions: the probabilities (and a multi-label bundle's labels)
            json_columns = {columns[-1], *([columns[-3]] if multi_label else [])}
        self.json_columns = set(json_columns)
        self.delimiter = "," if fmt == "csv" else "\t"
        self.handle.write(csv_row([csv_cell(c, raw=raw) for c in columns], self.delimiter))

    def write(self, rows: list[Row]) -> None:
        self.handle.writelines(
            csv_row([self._cell(row.get(c), c) for c in self.columns], self.delimiter) for row in rows
        )

    def _cell(self, value: Any, column: str) -> str:
        if column in self.json_columns:
            return json.dumps(jsonable(value), ensure_ascii=False)
        return csv_cell(value, raw=self.raw)

    def write_predicted(self, rows: list[Row], predicted: Predicted) -> None:
        inputs = self.columns[:-3]  # the input's own columns: never JSON (their names differ from the results')
        cells = predicted.csv_cells(self.delimiter, self.raw)
        self.handle.writelines(
            self.delimiter.join([*(quoted(csv_cell(row.get(c), raw=self.raw), self.delimiter) for c in inputs), end])
            for row, end in zip(rows, cells, strict=True)
        )


class _ParquetSink(_Sink):
    """Parquet, one row group per chunk. A chunk whose column types differ from the first (a JSON lines
    column empty at first, say) starts another part; the parts are merged under one schema at the end."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        super().__init__(path)
        self.columns = columns
        self.parts: list[Path] = []
        self.writer: Any = None

    def write(self, rows: list[Row]) -> None:
        import pandas as pd
        import pyarrow as pa

        with self._arrow_errors():
            self._write(
                pa.Table.from_pandas(pd.DataFrame.from_records(rows, columns=self.columns), preserve_index=False)
            )

    def write_predicted(self, rows: list[Row], predicted: Predicted) -> None:
        """The input columns through pandas as :meth:`write` does, the predictions straight from the arrays;
        the pandas metadata gets the entries pandas gives the prediction columns."""
        import pandas as pd
        import pyarrow as pa

        with self._arrow_errors():
            inputs = pa.Table.from_pandas(
                pd.DataFrame.from_records(rows, columns=self.columns[:-3]), preserve_index=False
            )
            fields, entries = predicted.layout.arrow()
            meta = json.loads(inputs.schema.metadata[b"pandas"])
            meta["columns"].extend(entries)
            table = pa.Table.from_arrays(
                [*inputs.columns, *predicted.arrow_columns()],
                schema=pa.schema([*inputs.schema, *fields],
                                 metadata={**inputs.schema.metadata, b"pandas": json.dumps(meta).encode()}),
            )  # fmt: skip
            self._write(table)

    def _write(self, table: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is not None and not table.schema.equals(self.writer.schema, check_metadata=False):
            try:
                table = table.cast(self.writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError, TypeError):
                self.writer.close()
                self.writer = None
        if self.writer is None:
            self.parts.append(self.path.with_name(f"{self.path.name}.{len(self.parts)}"))
            self.writer = pq.ParquetWriter(self.parts[-1], table.schema)
        self.writer.write_table(table)

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is not None:
            self.writer.close()
            self.writer = None
        with self._arrow_errors():
            if len(self.parts) == 1:
                os.replace(self.parts.pop(), self.path)
                return
            schema = pa.unify_schemas([pq.read_schema(p) for p in self.parts], promote_options="permissive")
            with pq.ParquetWriter(self.path, schema) as writer:
                for part in self.parts:
                    for batch in pq.ParquetFile(part).iter_batches(batch_size=CHUNK_ROWS):
                        writer.write_table(pa.Table.from_batches([batch]).cast(schema))
            self._remove_parts()

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self._remove_parts()
        super().discard()

    def _remove_parts(self) -> None:
        for part in self.parts:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        self.parts = []

    @contextlib.contextmanager
    def _arrow_errors(self) -> Iterator[None]:
        from slm.errors import one_line

        try:
            yield
        except Exception as exc:  # pyarrow raises its own types for values it cannot store
            if isinstance(exc, TypeError | ValueError) or type(exc).__module__.startswith("pyarrow"):
                target = self.path.name.split(".tmp")[0].lstrip(".")
                raise DataError(f"{target}: cannot write Parquet ({one_line(exc)}); write .jsonl instead") from None
            raise


class Writer:
    """What :func:`writing` yields: ``write(rows)`` writes whole rows; ``write.predictions(...)`` writes
    input rows with their predictions column-wise (the same output as :func:`labelled` rows)."""

    def __init__(self, sink: _Sink, columns: list[str]) -> None:
        self.sink, self.columns = sink, columns
        self.layout: Layout | None = None

    def __call__(self, rows: list[Row]) -> None:
        self.sink.write(rows)

    def predictions(self, rows: list[Row], proba: Any, labels: list[str], thresholds: Any,
                    names: tuple[str, str, str]) -> None:  # fmt: skip
        """``rows`` (input columns) with label, score and probabilities from ``proba``, WRITE_ROWS at a time.

        Measured on 100,000 BANKING77 texts (bench/predict_throughput.py), the per-row dicts of
        :func:`labelled` took longer than reading the input; this path builds none. Rows it cannot write
        exactly as :func:`labelled` does (a probability that is NaN or negative, labels named twice, an
        input column named like a prediction column) go through :func:`labelled`.
        """
        from slm.bundle.predictions import decode_columns

        columnar = len(set(labels)) == len(labels) and tuple(self.columns[-3:]) == tuple(names)
        columnar = columnar and not set(names) & set(self.columns[:-3])
        if columnar and (self.layout is None or (self.layout.labels, self.layout.names) != (labels, names)):
            self.layout = Layout(labels, names, thresholds is not None)
        for start in range(0, len(rows), WRITE_ROWS):
            part = rows[start : start + WRITE_ROWS]
            scores = proba[start : start + len(part)]
            decoded = decode_columns(scores, thresholds) if columnar else None
            if decoded is None or self.layout is None:
                for whole in labelled(part, scores, labels, thresholds, names):
                    self.sink.write(whole)
            else:
                self.sink.write_predicted(part, Predicted(self.layout, decoded))


@contextlib.contextmanager
def writing(fmt: str | None, output: str | Path | None, columns: list[str], *, multi_label: bool = False,
            raw_csv: bool = False, json_columns: Any = None) -> Iterator[Writer]:  # fmt: skip
    """A :class:`Writer`: a function that writes rows (dicts with ``columns``: input columns, then label, score,
    probabilities), and with :meth:`Writer.predictions` input rows and their predictions as arrays.

    ``json_columns``: the CSV/TSV columns written as JSON (default: the prediction columns that hold lists or
    dicts; ``()`` for rows that are the input's own columns, as ``slm redact`` writes).

    ``fmt`` None: JSON lines to stdout as they come. Else a temporary file beside ``output`` that replaces
    it when the block ends without an error; on an error (or Ctrl-C) it is removed and ``output`` kept.
    """
    if fmt is None:
        stdout = _StdoutSink()
        yield Writer(stdout, columns)
        stdout.finish()
        return
    target = Path(str(output))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    sink: _Sink
    try:
        if fmt == "jsonl":
            sink = _JsonlSink(staged)
        elif fmt in ("csv", "tsv"):
            sink = _CsvSink(staged, fmt, columns, multi_label, raw_csv, json_columns)
        else:
            sink = _ParquetSink(staged, columns)
    except BaseException:
        staged.unlink()
        raise
    try:
        yield Writer(sink, columns)
        sink.finish()
        os.chmod(staged, 0o644)
        os.replace(staged, target)
    except BaseException:
        sink.discard()
        raise


def labelled(rows: list[Row], proba: Any, labels: list[str], thresholds: Any,
             names: tuple[str, str, str]) -> Iterator[list[Row]]:  # fmt: skip
    """``rows`` with their predictions (from ``proba``), WRITE_ROWS at a time: new dicts, input columns first,
    then label, score (6 decimals) and probabilities. Only a slice's per-label dicts exist at any moment."""
    from slm.bundle.predictions import decode

    label, score, probabilities = names
    for start in range(0, len(rows), WRITE_ROWS):
        part = rows[start : start + WRITE_ROWS]
        results = decode(proba[start : start + len(part)], labels, thresholds)
        yield [{**row, label: result["label"], score: round(float(result["score"]), 6),
                probabilities: result["probabilities"]} for row, result in zip(part, results, strict=True)]  # fmt: skip
