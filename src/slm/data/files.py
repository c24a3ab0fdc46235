"""Checks on a data file that need no pandas: its format, that it exists and is readable, that it is UTF-8.

Shared by the whole-file reader (:mod:`slm.data.loading`, pandas) and the streaming one (:mod:`slm.data.stream`),
which must run on the ``[runtime]`` install: ``slm predict`` with an exported bundle has no pandas.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path

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
MAX_NAMED = 5


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
