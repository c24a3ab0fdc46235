"""Read a user's labelled text file (CSV, TSV, JSONL, Parquet) into a TextDataset and a DataReport.

Every problem the user can fix is raised as a one-line :class:`DataError` naming the file;
softer issues (duplicates, imbalance, very long texts) become warnings in the report.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slm.data.columns import (
    SAMPLE_ROWS,
    _ambiguous,
    _detect_label_col,
    _find_column,
    _is_list,
    _unique_names,
    cell_text,
    detect_text_column,
)
from slm.data.dataset import TextDataset
from slm.data.files import (
    _check_file,
    _check_not_empty,
    _column_list,
    _decode_utf8,
    _error,
    _named_counts,
    _plural,
    _q,
    _read_bytes,
    _resolve_format,
    _verb,
)
from slm.data.report import DataReport
from slm.errors import ConfigError

LONG_TEXT_CHARS = 2000
IMBALANCE_WARN_RATIO = 10.0
TRUE_VALUES = frozenset({"1", "true", "yes", "y", "t"})
FALSE_VALUES = frozenset({"0", "false", "no", "n", "f"})


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


# ---------------------------------------------------------------- columns


def _detect_text_col(path: Path, frame: pd.DataFrame, exclude: set[str]) -> str:
    """:func:`slm.data.columns.detect_text_column` over a DataFrame's first rows."""
    return detect_text_column(path, list(frame.columns), lambda c: frame[c].head(SAMPLE_ROWS).tolist(), exclude)


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


def _check_classes(path: Path, counts: dict[str, int], where: str, min_per_class: int, min_classes: int) -> None:
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
