"""Read a user's labelled text file (CSV, TSV, JSONL, Parquet) into a TextDataset and a DataReport.

Every problem the user can fix is raised as a one-line :class:`DataError` naming the file;
softer issues (duplicates, imbalance, very long texts) become warnings in the report.
"""

from __future__ import annotations

import codecs
import io
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slm.data.dataset import TextDataset
from slm.data.report import DataReport
from slm.errors import ConfigError, DataError

FORMATS = ("csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FORMAT_ALIASES = {"ndjson": "jsonl", "pq": "parquet", "tab": "tsv"}
TEXT_NAMES = (
    "text", "texts", "sentence", "sentences", "review", "reviews", "content", "utterance", "query",
    "question", "body", "message", "comment", "tweet", "document", "doc", "description", "input",
    "prompt", "passage", "abstract", "headline", "post", "sms", "email", "dialogue", "transcript",
)  # fmt: skip
LABEL_NAMES = (
    "label", "labels", "category", "categories", "intent", "intents", "class", "classes", "target",
    "sentiment", "tag", "tags", "topic", "topics", "emotion", "emotions", "polarity", "stance",
    "genre", "y", "label_name", "intent_name", "class_name", "label_text", "diagnosis", "disease",
)  # fmt: skip
LONG_TEXT_CHARS = 2000
IMBALANCE_WARN_RATIO = 10.0
MAX_NAMED = 5
TRUE_VALUES = frozenset({"1", "true", "yes", "y", "t"})
FALSE_VALUES = frozenset({"0", "false", "no", "n", "f"})


# ---------------------------------------------------------------- messages


def _error(path: Path, message: str) -> DataError:
    """A one-line DataError that starts with the file name."""
    return DataError(f"{path}: {message}")


def _q(value: str, limit: int = 40) -> str:
    """Quote a user value for a message, shortened and with control characters escaped."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return repr(value)


def _column_list(columns: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(_q(c) for c in columns[:limit])
    return shown + (f" … ({len(columns) - limit} more)" if len(columns) > limit else "")


def _named_counts(items: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"{_q(name)} ({count})" for name, count in items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _verb(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# ---------------------------------------------------------------- file and format


def _resolve_format(path: Path, fmt: str | None) -> str:
    """Format from ``fmt`` if given, else from the file extension."""
    if fmt is not None:
        name = fmt.strip().lower().lstrip(".")
        name = FORMAT_ALIASES.get(name, name)
        if name not in FORMATS:
            raise ConfigError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return name
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    hint = " (save the sheet as CSV first)" if suffix in (".xlsx", ".xls", ".ods") else ""
    shown = suffix or "(no extension)"
    raise _error(
        path,
        f"unsupported file type {shown}{hint}; use .csv, .tsv, .jsonl/.ndjson or .parquet, or pass --format",
    )


def _check_file(path: Path) -> None:
    """File exists, is a regular file and is not empty."""
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)[:3]
        hint = f" (it contains {', '.join(inside)})" if inside else ""
        raise _error(path, f"is a directory, not a data file; pass a file inside it{hint}")
    if not path.exists():
        raise _error(path, "file not found")
    if not path.is_file():
        raise _error(path, "is not a regular file")


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise _error(path, "file is empty (0 bytes)")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from exc


def _looks_like_gb18030(data: bytes) -> bool:
    """Whether the bytes decode as GB18030 into mostly CJK text."""
    for end in range(min(len(data), 65536), max(0, min(len(data), 65536) - 4), -1):  # a cut multi-byte character
        try:
            text = data[:end].decode("gb18030")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    wide = [c for c in text if ord(c) > 0x7F]
    return bool(wide) and sum("\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" for c in wide) / len(wide) > 0.8


def not_utf8(path: Path, head: bytes, bad: bytes, offset: int, line: int, column: int) -> DataError:
    """The error for bytes that are not UTF-8 at ``offset`` (``head``: the file's first 64 KiB, for the hint)."""
    hint = ""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        hint = " (it looks like UTF-16)"
    elif _looks_like_gb18030(head):
        hint = " (it looks like GBK/GB18030, common for Chinese Excel exports)"
    return _error(
        path,
        f"is not valid UTF-8{hint}: cannot decode byte(s) 0x{bad.hex(' ')} at line {line}, column {column} "
        f"(byte offset {offset}); re-save the file as UTF-8",
    )


def _decode_utf8(path: Path, data: bytes) -> str:
    """Strictly decode UTF-8 (a leading BOM is allowed), pointing at the first bad byte."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        bad = data[offset : offset + max(1, min(exc.end - exc.start, 4))]
        raise not_utf8(path, data[:65536], bad, offset, line, column) from exc
    if not text.strip():
        raise _error(path, "file is empty (only whitespace)")
    return text


# ---------------------------------------------------------------- readers


def _parse_error_message(message: str, fmt: str) -> str:
    """Turn a pandas tokenizer error into a short, line-numbered explanation."""
    sep_name = "commas" if fmt == "csv" else "tabs"
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if fields:
        expected, line, saw = fields.groups()
        return (
            f"line {line} has {saw} fields but the header has {expected}; "
            f"quote text that contains {sep_name} (malformed {fmt.upper()} row)"
        )
    eof = re.search(r"EOF inside string starting at row (\d+)", message)
    if eof:
        return f"unclosed quote starting near line {int(eof.group(1)) + 1} (malformed {fmt.upper()})"
    return f"cannot be parsed as {fmt.upper()} ({message.strip()})"


def _unique_names(header: Sequence[Any]) -> list[str]:
    """Header cells as column names: blanks become 'Unnamed: i', repeats get '.1', '.2'..."""
    names: list[str] = []
    seen: Counter[str] = Counter()
    for i, cell in enumerate(header):
        name = str(cell) if str(cell).strip() else f"Unnamed: {i}"
        if seen[name]:
            name = f"{name}.{seen[name]}"
        seen[str(cell) if str(cell).strip() else name] += 1
        names.append(name)
    return names


def _read_delimited(path: Path, text: str, fmt: str) -> pd.DataFrame:
    """CSV/TSV with every cell as a string; rows with too many fields are errors."""
    sep = "," if fmt == "csv" else "\t"
    try:
        # header=None so that a row with an extra field is an error rather than silently
        # becoming the index (pandas' behaviour when every data row has one field too many).
        raw = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, na_filter=False)
    except pd.errors.EmptyDataError as exc:
        raise _error(path, "file is empty") from exc
    except pd.errors.ParserError as exc:
        raise _error(path, _parse_error_message(str(exc), fmt)) from exc
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = _unique_names(raw.iloc[0].tolist())
    return frame


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """One JSON object per line; blank lines are skipped."""
    rows: list[dict[str, Any]] = []
    # Split on "\n" only: str.splitlines() would also break on U+2028 inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(path, f"line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise _error(path, f"line {lineno} is a JSON {type(obj).__name__}, expected an object {{...}}")
        rows.append(obj)
    return pd.DataFrame.from_records(rows)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for corrupt or non-Parquet files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _error(path, f"cannot be read as Parquet ({first})") from exc


def _read_frame(path: Path, fmt: str) -> pd.DataFrame:
    """The file as a DataFrame with string column names and at least one row."""
    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        text = _decode_utf8(path, _read_bytes(path))
        frame = _read_jsonl(path, text) if fmt == "jsonl" else _read_delimited(path, text, fmt)
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        what = "JSON lines" if fmt == "jsonl" else "data rows"
        raise _error(path, f"has no {what} (columns: {_column_list(list(frame.columns))})")
    return frame


# ---------------------------------------------------------------- cells


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def cell_text(value: Any) -> str:
    """A cell as text: missing → '', 3.0 → '3', bytes decoded, everything else ``str``."""
    if _is_missing(value):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# ---------------------------------------------------------------- columns


def _fold(name: str) -> str:
    return name.strip().lower()


def _find_column(path: Path, columns: list[str], name: str, what: str) -> str:
    """An explicitly requested column (exact name, else a unique case-insensitive match)."""
    if name in columns:
        return name
    folded = [c for c in columns if _fold(c) == _fold(name)]
    if len(folded) == 1:
        return folded[0]
    raise _error(path, f"{what} column {_q(name)} not found; available columns: {_column_list(columns)}")


def _by_name(columns: list[str], names: Sequence[str], exclude: set[str]) -> list[str]:
    wanted = set(names)
    return [c for c in columns if c not in exclude and _fold(c) in wanted]


def _looks_like_text(series: pd.Series) -> bool:
    """Mostly string values that are not all numbers."""
    sample = [v for v in series.head(2000).tolist() if not _is_missing(v)]
    if not sample or not all(isinstance(v, str) for v in sample):
        return False
    nonblank = [v for v in sample if v.strip()]
    if not nonblank:
        return False
    numeric = pd.to_numeric(pd.Series(nonblank, dtype=object), errors="coerce")
    return bool(numeric.isna().any())


def _mean_length(series: pd.Series) -> float:
    return float(np.mean([len(cell_text(v)) for v in series.head(2000).tolist()]))


def _ambiguous(path: Path, what: str, option: str, columns: list[str], candidates: list[str]) -> DataError:
    among = f" (candidates: {_column_list(candidates)})" if candidates else ""
    return _error(
        path,
        f"cannot tell which column holds the {what}{among}; pass {option} (columns: {_column_list(columns)})",
    )


def _detect_text_col(path: Path, frame: pd.DataFrame, exclude: set[str]) -> str:
    """A column with a common text name, else the one clearly longest string column."""
    columns = list(frame.columns)
    named = _by_name(columns, TEXT_NAMES, exclude)
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise _ambiguous(path, "text", "--text-col", columns, named)
    texty = [c for c in columns if c not in exclude and _looks_like_text(frame[c])]
    if len(texty) == 1:
        return texty[0]
    if not texty:
        raise _ambiguous(path, "text", "--text-col", columns, [])
    ranked = sorted(texty, key=lambda c: _mean_length(frame[c]), reverse=True)
    if _mean_length(frame[ranked[0]]) >= 1.5 * _mean_length(frame[ranked[1]]):
        return ranked[0]
    raise _ambiguous(path, "text", "--text-col", columns, ranked)


def _detect_label_col(path: Path, columns: list[str], exclude: set[str]) -> str | None:
    """A column with a common label name; None if there is none."""
    named = _by_name(columns, LABEL_NAMES, exclude)
    if len(named) > 1:
        raise _ambiguous(path, "labels", "--label-col", columns, named)
    return named[0] if named else None


def _choose_columns(
    path: Path,
    frame: pd.DataFrame,
    text_col: str | None,
    label_col: str | None,
    label_cols: Sequence[str] | None,
) -> tuple[str, str | None, list[str] | None]:
    """Resolve (text column, label column, 0/1 label columns), detecting what was not given."""
    columns = list(frame.columns)
    if text_col is not None:
        text_col = _find_column(path, columns, text_col, "text")
    if label_cols is not None:
        found = [_find_column(path, columns, c, "label") for c in label_cols]
        if text_col is None:
            text_col = _detect_text_col(path, frame, set(found))
        if text_col in found:
            raise ConfigError(f"text column {text_col!r} cannot also be a label column")
        return text_col, None, found
    if label_col is not None:
        label_col = _find_column(path, columns, label_col, "label")
    elif text_col is not None or len(columns) > 1:
        label_col = _detect_label_col(path, columns, {text_col} if text_col else set())
    if text_col is None:
        text_col = _detect_text_col(path, frame, {label_col} if label_col else set())
    if label_col is None:
        rest = [c for c in columns if c != text_col]
        if not rest:
            raise _error(path, f"has only one column ({_q(text_col)}); it needs a text and a label column")
        if len(rest) != 1:
            raise _ambiguous(path, "labels", "--label-col", columns, [])
        label_col = rest[0]
    if label_col == text_col:
        raise ConfigError(f"text column and label column are both {text_col!r}")
    return text_col, label_col, None


# ---------------------------------------------------------------- labels


def _split_labels(value: Any, sep: str | None) -> list[str]:
    """A multi-label cell as a list of distinct, stripped, non-empty labels."""
    parts = [cell_text(v) for v in value] if _is_list(value) else cell_text(value).split(sep)
    out: list[str] = []
    for part in (p.strip() for p in parts):
        if part and part not in out:
            out.append(part)
    return out


def _flag(value: Any) -> bool | None:
    """A 0/1 cell as a bool; None when blank or not a recognisable 0/1 value."""
    word = cell_text(value).strip().lower()
    if word in TRUE_VALUES:
        return True
    if word in FALSE_VALUES:
        return False
    return None


def _labels_from_flags(path: Path, frame: pd.DataFrame, label_cols: list[str]) -> list[list[str]]:
    """Rows' labels from several 0/1 columns (the label name is the column name)."""
    flags: dict[str, list[bool | None]] = {}
    for col in label_cols:
        values = frame[col].tolist()
        flags[col] = [_flag(v) for v in values]
        bad = [i for i, f in enumerate(flags[col]) if f is None]
        if bad:
            blank = sum(1 for i in bad if not cell_text(values[i]).strip())
            example = cell_text(values[bad[0]])
            kind = "blank" if blank == len(bad) else f"not 0/1 (e.g. {_q(example)})"
            raise _error(
                path,
                f"label column {_q(col)} has {_plural(len(bad), 'row')} whose value is {kind} "
                f"(first at data row {bad[0] + 1}); label columns must hold 0 or 1",
            )
    n = len(frame)
    return [[col for col in label_cols if flags[col][i]] for i in range(n)]


def _check_blank_single(path: Path, labels: list[str], rows: list[int], label_col: str) -> None:
    blank = [rows[i] for i, lab in enumerate(labels) if not lab]
    if blank:
        verb = "row has" if len(blank) == 1 else "rows have"
        raise _error(
            path,
            f"{len(blank)} {verb} a blank or missing label in column {_q(label_col)} "
            f"(first at data row {blank[0] + 1}); fill them in or remove those rows",
        )


# ---------------------------------------------------------------- checks and report


def _class_counts(ds: TextDataset) -> dict[str, int]:
    """Count per label (labels that never occur count 0), largest first."""
    counts = ds.label_counts()
    full = {name: counts.get(name, 0) for name in ds.label_names}
    return dict(sorted(full.items(), key=lambda kv: (-kv[1], kv[0])))


def _check_classes(
    path: Path, counts: dict[str, int], where: str, min_per_class: int, min_classes: int
) -> None:
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < min_classes:
        if not present:
            raise _error(path, f"no labels found in {where}")
        found = "only one label" if len(present) == 1 else f"only {len(present)} labels"
        raise _error(
            path,
            f"{found} found in {where}: {_named_counts(list(present.items()))}; a classifier needs "
            f"at least {min_classes} different labels",
        )
    small = sorted(((k, v) for k, v in counts.items() if v < min_per_class), key=lambda kv: (kv[1], kv[0]))
    if small:
        label_word = "label has" if len(small) == 1 else "labels have"
        raise _error(
            path,
            f"{len(small)} {label_word} fewer than {min_per_class} examples: {_named_counts(small)}; "
            f"each label needs at least {min_per_class} (add examples or remove those labels)",
        )


def _text_stats(texts: list[str]) -> dict[str, float]:
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return {
        "mean": round(float(lengths.mean()), 1),
        "median": float(np.median(lengths)),
        "p95": round(float(np.percentile(lengths, 95)), 1),
        "max": int(lengths.max()),
    }


def _label_key(label: str | list[str]) -> str | tuple[str, ...]:
    return tuple(sorted(label)) if isinstance(label, list) else label


def _show_label(label: str | tuple[str, ...]) -> str:
    return _q(label) if isinstance(label, str) else _q("|".join(label) or "(none)")


def _duplicate_info(ds: TextDataset) -> tuple[int, int, str | None]:
    """(rows repeating an earlier text, texts seen with different labels, an example warning)."""
    seen: dict[str, set[str | tuple[str, ...]]] = {}
    for text, label in zip(ds.texts, ds.labels, strict=True):
        seen.setdefault(text, set()).add(_label_key(label))
    n_dup = len(ds.texts) - len(seen)
    conflicting = [(t, labs) for t, labs in seen.items() if len(labs) > 1]
    example = None
    if conflicting:
        text, labs = conflicting[0]
        shown = " and ".join(_show_label(lab) for lab in sorted(labs, key=str)[:2])
        example = f"e.g. {_q(text)} is labelled {shown}"
    return n_dup, len(conflicting), example


def _imbalance(counts: dict[str, int]) -> tuple[float | None, str | None]:
    present = [(k, v) for k, v in counts.items() if v > 0]
    if len(present) < 2:
        return None, None
    (big, n_big), (small, n_small) = present[0], present[-1]
    ratio = round(n_big / n_small, 2)
    if ratio <= IMBALANCE_WARN_RATIO:
        return ratio, None
    return ratio, (
        f"labels are imbalanced: {_q(big)} has {n_big} examples but {_q(small)} only {n_small} "
        f"(ratio {ratio:.1f}:1); expect weaker results on the rare labels"
    )


def _warnings(
    report: DataReport, ds: TextDataset, text_col: str, duplicate_example: str | None, imbalance: str | None
) -> list[str]:
    out: list[str] = []
    if report.n_blank_dropped:
        dropped = _plural(report.n_blank_dropped, "row")
        out.append(f"dropped {dropped} with blank text in column {_q(text_col)}")
    if report.n_duplicates:
        out.append(
            f"{_plural(report.n_duplicates, 'row')} {_verb(report.n_duplicates, 'repeats', 'repeat')} "
            "an earlier text exactly (duplicates); "
            "duplicates shared between train and validation inflate scores"
        )
    if report.n_conflicting_duplicates:
        out.append(
            f"{_plural(report.n_conflicting_duplicates, 'text')} "
            f"{_verb(report.n_conflicting_duplicates, 'appears', 'appear')} with different labels "
            f"(conflicting duplicates), {duplicate_example}"
        )
    if imbalance:
        out.append(imbalance)
    if ds.multi_label:
        empty = sum(1 for labs in ds.labels if not labs)
        if empty:
            out.append(
                f"{_plural(empty, 'row')} {_verb(empty, 'has', 'have')} no labels; "
                "they are kept as examples of none of the labels"
            )
    long = sum(1 for t in ds.texts if len(t) > LONG_TEXT_CHARS)
    if long:
        out.append(
            f"{_plural(long, 'text')} {_verb(long, 'is', 'are')} longer than {LONG_TEXT_CHARS} characters "
            f"(longest {report.text_chars['max']}); the model reads only the start of each text"
        )
    return out


# ---------------------------------------------------------------- entry point


def _check_options(
    label_col: str | None, label_cols: Sequence[str] | None, label_sep: str | None, min_per_class: int
) -> None:
    if label_cols is not None and label_col is not None:
        raise ConfigError("give either a label column or several 0/1 label columns, not both")
    if label_cols is not None and label_sep is not None:
        raise ConfigError("a label separator applies to one label column, not to 0/1 label columns")
    if label_cols is not None and len(label_cols) < 1:
        raise ConfigError("the list of 0/1 label columns is empty")
    if label_sep == "":
        raise ConfigError("the label separator cannot be empty")
    if min_per_class < 0:
        raise ConfigError(f"min_per_class must be >= 0, got {min_per_class}")


def load_dataset(
    path: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    label_cols: Sequence[str] | None = None,
    label_sep: str | None = None,
    fmt: str | None = None,
    min_per_class: int = 1,
    min_classes: int = 2,
) -> tuple[TextDataset, DataReport]:
    """Load labelled texts from CSV/TSV/JSONL/Parquet, validate them and summarise them.

    ``label_sep`` splits one label column into several labels; ``label_cols`` names several 0/1
    columns; either (or a JSON/Parquet column holding lists) makes the dataset multi-label.
    ``min_classes=1`` lets an evaluation file hold a single label. Raises DataError (one line).
    """
    path = Path(path)
    _check_options(label_col, label_cols, label_sep, min_per_class)
    _check_file(path)
    fmt = _resolve_format(path, fmt)
    _check_not_empty(path)
    frame = _read_frame(path, fmt)
    text_col, label_col, label_cols = _choose_columns(path, frame, text_col, label_col, label_cols)

    all_texts = [cell_text(v) for v in frame[text_col].tolist()]
    rows = [i for i, t in enumerate(all_texts) if t.strip()]
    if not rows:
        raise _error(path, f"all {len(all_texts)} texts in column {_q(text_col)} are blank")

    label_names: list[str] = []
    if label_cols is not None:
        all_labels: list[Any] = _labels_from_flags(path, frame, label_cols)
        multi, label_names, where = True, list(label_cols), f"label columns {_column_list(label_cols)}"
    else:
        assert label_col is not None
        values = frame[label_col].tolist()
        multi = label_sep is not None or any(_is_list(v) for v in values)
        where = f"column {_q(label_col)}"
        all_labels = [_split_labels(v, label_sep) for v in values] if multi else [cell_text(v).strip() for v in values]

    labels = [all_labels[i] for i in rows]
    if not multi:
        assert label_col is not None
        _check_blank_single(path, labels, rows, label_col)
    ds = TextDataset(
        texts=[all_texts[i] for i in rows],
        labels=labels,
        multi_label=multi,
        label_names=label_names,
        source=str(path),
    )
    counts = _class_counts(ds)
    _check_classes(path, counts, where, min_per_class, min_classes)
    return ds, _report(path, fmt, ds, counts, text_col, label_col, label_cols, label_sep, len(all_texts))


def _report(
    path: Path,
    fmt: str,
    ds: TextDataset,
    counts: dict[str, int],
    text_col: str,
    label_col: str | None,
    label_cols: list[str] | None,
    label_sep: str | None,
    n_read: int,
) -> DataReport:
    n_dup, n_conflict, dup_example = _duplicate_info(ds)
    ratio, imbalance = _imbalance(counts)
    report = DataReport(
        path=str(path),
        format=fmt,
        text_col=text_col,
        label_col=label_col,
        label_cols=label_cols,
        label_sep=label_sep,
        multi_label=ds.multi_label,
        n_rows_read=n_read,
        n_rows=len(ds),
        n_blank_dropped=n_read - len(ds),
        n_duplicates=n_dup,
        n_conflicting_duplicates=n_conflict,
        class_counts=counts,
        imbalance_ratio=ratio,
        text_chars=_text_stats(ds.texts),
    )
    report.warnings = _warnings(report, ds, text_col, dup_example, imbalance)
    return report


def read_table(path: str | Path) -> pd.DataFrame:
    """Any CSV/TSV/JSONL/Parquet table (format from the extension), with the same checks and messages."""
    path = Path(path)
    _check_file(path)
    fmt = _resolve_format(path, None)
    _check_not_empty(path)
    return _read_frame(path, fmt)


def read_unlabelled(path: str | Path, text_col: str | None = None) -> tuple[pd.DataFrame, str]:
    """An unlabelled table to predict on, and its text column, with the same checks and messages."""
    path = Path(path)
    frame = read_table(path)
    if text_col is not None:
        return frame, _find_column(path, list(frame.columns), text_col, "text")
    return frame, _detect_text_col(path, frame, set())


def read_texts(path: str | Path, text_col: str | None = None) -> list[str]:
    """The non-blank texts of an unlabelled file (e.g. for self-training), in file order."""
    frame, column = read_unlabelled(path, text_col)
    texts = [t for t in (cell_text(v).strip() for v in frame[column]) if t]
    if not texts:
        raise _error(Path(path), f"column {_q(column)} has no non-blank text")
    return texts
