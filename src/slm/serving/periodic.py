"""Work a server repeats while it runs (expiring stored rows), tied to the app's lifespan.

Each stored thing the server writes takes a retention and purges what is older: at start (in the caller)
and then every ``every_s`` seconds while the app runs. The work runs in a worker thread, so a slow
database never stalls the event loop, and a failure is logged (no texts) and retried at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from slm.serving import log
from slm.storage.retention import purge_interval

__all__ = ["purge_interval", "repeat_while_running"]


def repeat_while_running(
    app: FastAPI,
    every_s: float,
    work: Callable[[], object],
    *,
    name: str,
    on_close: Callable[[], object] | None = None,
) -> None:
    """Run ``work()`` every ``every_s`` seconds in a worker thread while ``app`` runs; ``on_close()`` at its end."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(given: Any) -> AsyncIterator[Any]:
        async with inner(given) as state:
            task = asyncio.get_running_loop().create_task(_repeat(every_s, work, name))
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if on_close is not None:
                    await asyncio.to_thread(on_close)

    app.router.lifespan_context = lifespan


async def _repeat(every_s: float, work: Callable[[], object], name: str) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(work)
        except Exception as exc:  # a database down for a while must not stop later runs
            log.event(f"{name}_failed", level=30, error=_reason(exc))


def _reason(exc: BaseException) -> str:
    """The driver's first line: never SQLAlchemy's statement with its parameters (they could hold texts)."""
    orig = getattr(exc, "orig", None)
    cause = orig if isinstance(orig, BaseException) else exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
