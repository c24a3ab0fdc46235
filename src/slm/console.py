"""The Rich consoles: ``console`` for progress displays and the CLI's messages (stderr), ``out`` for results (stdout).

Status goes to stderr so that stdout stays for data; the CLI and the apps' commands print their results
(tables, reports) on ``out``. Library code draws on ``console`` only when its caller asked for progress
(``show_progress=True``); messages go through ``logging`` instead (see :mod:`slm.logs`, whose CLI handler
prints them here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console

console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=False)


@contextlib.contextmanager
def status(message: str, *, enabled: bool) -> Iterator[None]:
    """A transient spinner with ``message`` while the block runs, when ``enabled``; nothing otherwise."""
    if not enabled:
        yield
        return
    with console.status(message):
        yield
