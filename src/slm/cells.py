"""Values as JSON and as CSV cells that are safe to open in a spreadsheet (stdlib only: any extra may import it).

CSV formula injection (OWASP): a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return
is a formula to Excel, LibreOffice and Google Sheets, so a customer's "=HYPERLINK(...)" exported for
labelling runs when the sheet is opened. Every CSV/TSV slm writes from user text (``slm predict -o
x.csv``, ``--engine ray`` CSV shards, ``slm app support unanswered``) passes its text cells through
:func:`neutralise_formula`, unless the user asks for raw cells (``--raw-csv``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise_formula(text: str) -> str:
    """``text`` with a ``'`` in front when a spreadsheet would run it as a formula (spreadsheets show the
    cell without it). Plain numbers such as ``-0.5`` or ``+33`` are not formulas and stay as they are."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_cell(value: Any, *, raw: bool = False) -> str:
    """One CSV/TSV cell: missing values empty, numbers as Python writes them, text formula-neutralised."""
    if _is_missing(value):
        return ""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, bool | int | float):
        return str(value)
    text = str(value)
    return text if raw else neutralise_formula(text)


def csv_row(cells: Iterable[str], delimiter: str = ",") -> str:
    """One CSV/TSV line ending in LF, quoted as the csv module quotes (QUOTE_MINIMAL), except that a cell
    holding a carriage return is quoted too: with a LF line ending the csv module leaves it bare, and every
    reader then splits the row there (pandas' to_csv did the same)."""
    return delimiter.join(quoted(cell, delimiter) for cell in cells) + "\n"


def quoted(cell: str, delimiter: str) -> str:
    """One cell as :func:`csv_row` writes it: quoted (quotes doubled) when it holds the delimiter, a quote or a
    line break."""
    if delimiter in cell or '"' in cell or "\n" in cell or "\r" in cell:
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _is_missing(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA (what pandas wrote as an empty cell)."""
    if value is None:
        return True
    if isinstance(value, str | bytes | list | tuple | dict) or hasattr(value, "__len__"):
        return False
    try:
        return bool(value != value)  # NaN and NaT differ from themselves
    except (TypeError, ValueError):  # pandas.NA refuses to be a bool
        return type(value).__name__ == "NAType"


def jsonable(value: Any) -> Any:
    """A value json.dumps accepts: numpy scalars/arrays, NaN, timestamps and bytes converted."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    return str(value)
