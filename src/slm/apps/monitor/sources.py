"""Where items come from: a JSONL file (from a byte offset, optionally following it as it grows) or stdin.

Each source yields batches of ``(line, offset_after_line)``. A file's batches are cut every
``batch_size`` lines counted from where reading started, so a monitor resumed from a committed
batch boundary sees the same batches as a run that was never interrupted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from slm.errors import DataError

Line = tuple[bytes, int]


class FileSource:
    """A JSONL file read from ``start`` (bytes); with ``follow``, lines appended later are read too."""

    def __init__(self, path: str | Path, *, start: int = 0, follow: bool = False, poll_seconds: float = 0.5) -> None:
        self.path = Path(path)
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
            yield from _batches(_file_lines(handle, self.start, self.follow, self.poll_seconds, stop), batch_size)


class StdinSource:
    """Lines from standard input, until it closes (no offset: re-sent items are still deduplicated by id)."""

    key = None
    start = 0
    size = None
    restarted = False

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin.buffer

    def batches(self, batch_size: int, *, stop: Callable[[], bool] = lambda: False) -> Iterator[list[Line]]:
        def lines() -> Iterator[Line | None]:
            offset = 0
            for line in self.stream:
                offset += len(line)
                yield line, offset
                if stop():
                    return

        yield from _batches(lines(), batch_size)


def _file_lines(
    handle: BinaryIO, offset: int, follow: bool, poll_seconds: float, stop: Callable[[], bool]
) -> Iterator[Line | None]:
    """Complete lines with the offset after each; ``None`` when a followed file has nothing new yet."""
    pending = b""
    while True:
        chunk = handle.readline()
        if chunk:
            pending += chunk
            if pending.endswith(b"\n"):
                offset += len(pending)
                yield pending, offset
                pending = b""
            continue
        if not follow:
            if pending:  # a last line without a newline
                yield pending, offset + len(pending)
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
