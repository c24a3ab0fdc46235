"""Dynamic micro-batching: requests queue, are grouped into batches and run in a thread pool.

A batch leaves when it holds ``max_batch`` texts or its oldest request has waited ``max_wait_ms``,
and only when one of ``concurrency`` batch slots is free: while every slot is busy, arriving
requests pile up and the next batch is as full as the load allows. The queue is bounded in texts;
a request that does not fit is refused at once (:class:`QueueFull`) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

ItemT = TypeVar("ItemT")  # one input of a request: a text, a question
ContextT = TypeVar("ContextT")  # what a run returns beside its rows (e.g. the model that produced them)


class QueueFull(Exception):
    """The queue cannot take the request now; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The batcher is closing and takes no new requests."""


class BatchObserver(Protocol):
    def batch(self, texts: int, seconds: float) -> None: ...
    def queue(self, texts: int) -> None: ...
    def waited(self, seconds: float) -> None: ...


@dataclass(slots=True)
class _Request(Generic[ItemT, ContextT]):
    texts: list[ItemT]
    future: asyncio.Future[tuple[Any, ContextT]]
    enqueued: float


class MicroBatcher(Generic[ItemT, ContextT]):
    """Groups concurrent ``submit`` calls into batches for ``run``.

    ``run(texts)`` executes in ``executor`` and returns ``(rows, context)``: ``rows`` is indexable by
    text (a NumPy array, say) and ``context`` whatever the caller needs to read them (e.g. which model
    produced them). Each ``submit`` gets back its own slice of rows and the shared context.
    """

    def __init__(
        self,
        run: Callable[[list[ItemT]], tuple[Any, ContextT]],
        *,
        executor: Executor,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 512,
        concurrency: int = 1,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._observer = observer
        self._pending: deque[_Request[ItemT, ContextT]] = deque()
        self._queued = 0
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Future[tuple[Any, ContextT]]] = set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._rate = 0.0  # texts per second of one batch slot, smoothed: for the Retry-After hint

    @property
    def queued(self) -> int:
        """Texts waiting for a batch."""
        return self._queued

    @property
    def full(self) -> bool:
        """No room for even one more text."""
        return self._queued >= self.max_queue

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, texts: list[ItemT]) -> tuple[Any, ContextT]:
        """Queue ``texts`` and wait for their rows; QueueFull / ShuttingDown when refused."""
        if self._closing:
            raise ShuttingDown()
        if self._queued + len(texts) > self.max_queue:
            raise QueueFull(self.retry_after())
        future: asyncio.Future[tuple[Any, ContextT]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(texts, future, time.perf_counter()))
        self._set_queued(self._queued + len(texts))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Take no new requests, finish the queued and running ones, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # ------------------------------------------------------------------ internals
    def _set_queued(self, value: int) -> None:
        self._queued = value
        if self._observer is not None:
            self._observer.queue(value)

    def retry_after(self) -> int:
        """Seconds until the queue has drained at the recent rate (at least 1): the Retry-After hint."""
        if self._rate <= 0:
            return 1
        return max(1, math.ceil(self._queued / (self._rate * self._concurrency)))

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            await self._fill()
            self._dispatch(self._take())

    async def _fill(self) -> None:
        """Wait for more texts until the batch is full or its oldest request is due."""
        while self._queued < self.max_batch and not self._closing:
            remaining = self._pending[0].enqueued + self.max_wait - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Request[ItemT, ContextT]]:
        """Whole requests from the front of the queue, up to ``max_batch`` texts (always at least one)."""
        taken = [self._pending.popleft()]
        size = len(taken[0].texts)
        while self._pending and size + len(self._pending[0].texts) <= self.max_batch:
            request = self._pending.popleft()
            taken.append(request)
            size += len(request.texts)
        self._set_queued(self._queued - size)
        return taken

    def _dispatch(self, requests: list[_Request[ItemT, ContextT]]) -> None:
        texts = [t for r in requests for t in r.texts]
        started = time.perf_counter()
        if self._observer is not None:
            for request in requests:
                self._observer.waited(started - request.enqueued)
        running = asyncio.get_running_loop().run_in_executor(self._executor, self._run, texts)
        self._running.add(running)
        running.add_done_callback(lambda done: self._finish(done, requests, len(texts), started))

    def _finish(
        self,
        done: asyncio.Future[tuple[Any, ContextT]],
        requests: list[_Request[ItemT, ContextT]],
        size: int,
        started: float,
    ) -> None:
        self._running.discard(done)
        self._slots.release()
        seconds = time.perf_counter() - started
        error = done.exception()
        if error is None:
            rows, context = done.result()
            self._rate = size / seconds if self._rate == 0 else 0.8 * self._rate + 0.2 * size / seconds
            if self._observer is not None:
                self._observer.batch(size, seconds)
        start = 0
        for request in requests:
            stop = start + len(request.texts)
            if not request.future.done():  # done: the caller went away
                if error is None:
                    request.future.set_result((rows[start:stop], context))
                else:
                    request.future.set_exception(error)
            start = stop
