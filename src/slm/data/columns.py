"""Column names, the text column's detection and cell values, on plain rows: no pandas.

The whole-file reader (:mod:`slm.data.loading`) passes a DataFrame's columns, the streaming reader
(:mod:`slm.data.stream`, which runs on the ``[runtime]`` install) its first rows; both choose the same column.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slm.data.files import _column_list, _error, _q
from slm.errors import DataError

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
SAMPLE_ROWS = 2000  # rows of a column looked at to tell whether it holds text
# A number as pandas.to_numeric reads one (surrounding spaces allowed): such a column is not text.
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*|\s*[+-]?(?:inf|infinity|nan)\s*", re.I)


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


def _is_missing(value: Any) -> bool:
    # pandas' NA and NaT by type name: this module must not import pandas.
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
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


def _looks_like_text(values: list[Any]) -> bool:
    """Mostly string values that are not all numbers."""
    sample = [v for v in values if not _is_missing(v)]
    if not sample or not all(isinstance(v, str) for v in sample):
        return False
    nonblank = [v for v in sample if v.strip()]
    return bool(nonblank) and not all(_NUMBER.fullmatch(v) for v in nonblank)


def _mean_length(values: list[Any]) -> float:
    return float(np.mean([len(cell_text(v)) for v in values]))


def _ambiguous(path: Path, what: str, option: str, columns: list[str], candidates: list[str]) -> DataError:
    among = f" (candidates: {_column_list(candidates)})" if candidates else ""
    return _error(
        path,
        f"cannot tell which column holds the {what}{among}; pass {option} (columns: {_column_list(columns)})",
    )


def detect_text_column(path: Path, columns: list[str], values: Callable[[str], list[Any]], exclude: set[str]) -> str:
    """A column with a common text name, else the one clearly longest string column.

    ``values(column)`` gives that column's first :data:`SAMPLE_ROWS` cells.
    """
    named = _by_name(columns, TEXT_NAMES, exclude)
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise _ambiguous(path, "text", "--text-col", columns, named)
    texty = [c for c in columns if c not in exclude and _looks_like_text(values(c))]
    if len(texty) == 1:
        return texty[0]
    if not texty:
        raise _ambiguous(path, "text", "--text-col", columns, [])
    length = {c: _mean_length(values(c)) for c in texty}
    ranked = sorted(texty, key=length.__getitem__, reverse=True)
    if length[ranked[0]] >= 1.5 * length[ranked[1]]:
        return ranked[0]
    raise _ambiguous(path, "text", "--text-col", columns, ranked)


def _detect_label_col(path: Path, columns: list[str], exclude: set[str]) -> str | None:
    """A column with a common label name; None if there is none."""
    named = _by_name(columns, LABEL_NAMES, exclude)
    if len(named) > 1:
        raise _ambiguous(path, "labels", "--label-col", columns, named)
    return named[0] if named else None
