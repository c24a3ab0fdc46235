"""Where items come from: a JSONL file (from a byte offset, optionally following it as it grows) or stdin.

Each source yields batches of ``(line, offset_after_line)``. A file's batches are cut every
``batch_size`` lines counted from where reading started, so a monitor resumed from a committed
batch boundary sees the same batches as a run that was never interrupted.

Lines are read with a bound (``max_line_bytes``, from the config's ``max_text_chars``): a longer line
is skipped in pieces, never held whole, and comes out as an :class:`Overlong` (its first bytes and its
size) that the monitor rejects as ``text_too_long``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from slm.apps.monitor.items import DEFAULT_MAX_TEXT_CHARS, Rejection
from slm.errors import DataError

Line = tuple[bytes, int]
# Bytes of an over-long line kept for the rejection's excerpt.
EXCERPT_BYTES = 200


def line_limit(max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> int:
    """The longest line that can hold an acceptable item: a text of ``max_text_chars`` characters written as
    JSON escapes (12 bytes for a character outside the BMP), plus 64 KiB for the other fields."""
    return 12 * max_text_chars + 65536


class Overlong(bytes):
    """The first EXCERPT_BYTES of a line longer than the source's limit; ``size`` is the whole line's length."""

    size: int

    def __new__(cls, head: bytes, size: int) -> Overlong:
        line = super().__new__(cls, head)
        line.size = size
        return line

    def rejection(self, limit: int) -> Rejection:
        detail = f"line has {self.size:,} bytes, more than the {limit:,} an item can take"
        return Rejection("text_too_long", detail, self.decode("utf-8", errors="replace"))


class FileSource:
    """A JSONL file read from ``start`` (bytes); with ``follow``, lines appended later are read too."""

    def __init__(self, path: str | Path, *, start: int = 0, follow: bool = False, poll_seconds: float = 0.5,
                 max_line_bytes: int | None = None) -> None:  # fmt: skip
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes or line_limit()
        if not self.path.is_file():
            raise DataError(f"input {self.path} does not exist")
        self.key = str(self.path.resolve())
        self.size = self.path.stat().st_size
        self.restarted = start > self.size  # the file was truncated or replaced: read it again from the top
        self.start = 0 if self.restarted else start
        self.follow, self.poll_seconds = follow, poll_seconds

    def batches(self, batch_size: int, *, stop: Callable[[], bool] = lambda: False) -> Iterator[list[Line]]:
        with self.path.open("rb") as handle:
            handle.seek(self.start)
            lines = _lines(handle, self.start, self.max_line_bytes, follow=self.follow,
                           poll_seconds=self.poll_seconds, stop=stop)  # fmt: skip
            yield from _batches(lines, batch_size)


class StdinSource:
    """Lines from standard input, until it closes (no offset: re-sent items are still deduplicated by id)."""

    key = None
    start = 0
    size = None
    restarted = False

    def __init__(self, stream: BinaryIO | None = None, *, max_line_bytes: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.max_line_bytes = max_line_bytes or line_limit()

    def batches(self, batch_size: int, *, stop: Callable[[], bool] = lambda: False) -> Iterator[list[Line]]:
        yield from _batches(_lines(self.stream, 0, self.max_line_bytes, stop=stop, stop_each_line=True), batch_size)


def _lines(
    handle: BinaryIO,
    offset: int,
    limit: int,
    *,
    follow: bool = False,
    poll_seconds: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
    stop_each_line: bool = False,
) -> Iterator[Line | None]:
    """Complete lines with the offset after each (an :class:`Overlong` for one over ``limit`` bytes);
    ``None`` when a followed file has nothing new yet. No read returns more than ``limit + 1`` bytes, and
    an over-long line keeps only its first EXCERPT_BYTES, however long it grows."""
    pending, size = b"", 0
    while True:
        chunk = handle.readline(limit + 1)
        if chunk:
            size += len(chunk)
            pending = pending + chunk if size <= limit else (pending + chunk[:EXCERPT_BYTES])[:EXCERPT_BYTES]
            if chunk.endswith(b"\n"):
                offset += size
                yield (pending if size <= limit else Overlong(pending, size)), offset
                pending, size = b"", 0
                if stop_each_line and stop():
                    return
            continue
        if not follow:
            if size:  # a last line without a newline
                yield (pending if size <= limit else Overlong(pending, size)), offset + size
            return
        if stop():
            return
        yield None  # idle: the batcher flushes what it has
        time.sleep(poll_seconds)


def _batches(lines: Iterator[Line | None], batch_size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        if line is None:
            if batch:
                yield batch
                batch = []
            continue
        if line[0].strip():
            batch.append(line)
        elif batch:  # a blank line: its offset still counts as read
            batch[-1] = (batch[-1][0], line[1])
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
