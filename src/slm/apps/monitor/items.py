"""One stream item (``id``, ``timestamp``, ``text``, optional ``source``), parsed from a JSON line or object.

Bad input never stops the stream: :func:`parse_line` returns a :class:`Rejection` with one of
:data:`REASONS`, which the monitor counts and stores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 200
REASONS = (
    "malformed_json",  # the line is not JSON
    "not_an_object",  # JSON, but not an object
    "missing_id",
    "missing_timestamp",
    "missing_text",
    "bad_id",  # not a string/integer, or too long
    "bad_timestamp",  # not ISO 8601 or epoch seconds/milliseconds
    "bad_text",  # not a string
    "empty_text",
    "text_too_long",  # longer than max_text_chars
    "bad_source",
)
# Epoch numbers above this are milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_FROM = 1e11


@dataclass(frozen=True)
class Item:
    id: str
    ts: float  # epoch seconds, UTC
    text: str
    source: str | None = None


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str
    excerpt: str


def parse_line(line: bytes | str, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Item | Rejection:
    """An :class:`Item` from one JSON line, or the :class:`Rejection` that says why not."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejection("malformed_json", getattr(exc, "msg", "too deeply nested"), line[:200])
    return parse_object(data, max_text_chars=max_text_chars, excerpt=line[:200])


def parse_object(
    data: Any, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, excerpt: str | None = None
) -> Item | Rejection:
    """An :class:`Item` from a decoded JSON value, or the :class:`Rejection` that says why not."""
    if excerpt is None:
        excerpt = json.dumps(data, ensure_ascii=False, default=str)[:200]
    if not isinstance(data, dict):
        return Rejection("not_an_object", f"a JSON {type(data).__name__}, not an object", excerpt)
    for field in ("id", "timestamp", "text"):
        if data.get(field) is None:
            return Rejection(f"missing_{field}", f"no '{field}' field", excerpt)
    raw_id = data["id"]
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        return Rejection("bad_id", "id must be a non-empty string or an integer", excerpt)
    item_id = str(raw_id).strip()
    if len(item_id) > MAX_ID_CHARS:
        return Rejection("bad_id", f"id is longer than {MAX_ID_CHARS} characters", excerpt)
    ts = parse_timestamp(data["timestamp"])
    if ts is None:
        return Rejection("bad_timestamp", f"cannot read timestamp {str(data['timestamp'])[:40]!r}", excerpt)
    text = data["text"]
    if not isinstance(text, str):
        return Rejection("bad_text", f"text must be a string, got {type(text).__name__}", excerpt)
    if not text.strip():
        return Rejection("empty_text", "text is empty", excerpt)
    if len(text) > max_text_chars:
        return Rejection("text_too_long", f"text has {len(text):,} characters (limit {max_text_chars:,})", excerpt)
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        return Rejection("bad_source", f"source must be a string, got {type(source).__name__}", excerpt)
    return Item(item_id, ts, text, source)


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from ISO 8601 text (no zone: UTC) or epoch seconds/milliseconds; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds >= _MILLISECONDS_FROM:
        seconds /= 1000.0
    return seconds if seconds < _MILLISECONDS_FROM else None


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC text: ``2025-01-31T12:00:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
