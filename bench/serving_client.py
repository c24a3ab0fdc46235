"""Bounded asynchronous load client for ``bench/serving.py`` (loopback only, bounded in count and time).

    python bench/serving_client.py URL --texts FILE.json --concurrency 32 --duration 60 -o result.json
    python bench/serving_client.py URL --texts FILE.json --rate 200 --duration 60 -o result.json

Closed loop (``--concurrency N``): N clients, each sending its next single-text request as soon as
the previous one is answered. Open loop (``--rate R``): requests start R times a second whatever the
answers do, with at most ``--max-in-flight`` outstanding (a start that would pass it is counted as
``client_dropped``, not sent). Every answer's status and latency is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import numpy as np

MAX_DURATION_S = 600
MAX_CONCURRENCY = 2048


def _loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"error: the load client only targets loopback addresses, not {host}")
    return url


class Recorder:
    def __init__(self, started: float) -> None:
        self.started = started
        self.records: list[tuple[float, float, int]] = []  # (start offset s, latency s, status; 0 = no answer)
        self.errors: Counter[str] = Counter()
        self.dropped = 0

    async def send(self, session: aiohttp.ClientSession, url: str, text: str) -> None:
        begin = time.perf_counter()
        try:
            async with session.post(url, json={"text": text}) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.errors[type(exc).__name__] += 1
            status = 0
        self.records.append((begin - self.started, time.perf_counter() - begin, status))

    def summary(self, duration: float) -> dict:
        ms = lambda values, q: round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None  # noqa: E731
        statuses = Counter(status for _, _, status in self.records)
        ok = [lat for _, lat, status in self.records if status == 200]
        busy = [lat for _, lat, status in self.records if status == 503]
        seconds = int(np.ceil(duration))
        per_second = {"200": [0] * seconds, "503": [0] * seconds, "other": [0] * seconds}
        for start, lat, status in self.records:
            slot = min(int(start + lat), seconds - 1)
            per_second["200" if status == 200 else "503" if status == 503 else "other"][slot] += 1
        return {
            "requests": len(self.records),
            "status": {str(k): v for k, v in sorted(statuses.items())},
            "errors": sum(v for k, v in statuses.items() if k != 200),
            "client_exceptions": dict(self.errors),
            "client_dropped": self.dropped,
            "throughput_rps": round(len(ok) / duration, 2),
            "latency_ms": {q: ms(ok, q) for q in (50, 90, 95, 99)} | {"max": ms(ok, 100)},
            "latency_503_ms": {q: ms(busy, q) for q in (50, 99)},
            "per_second": per_second,
        }


async def closed_loop(url: str, texts: list[str], concurrency: int, duration: float) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        recorder = Recorder(started)
        deadline = started + duration

        async def client(index: int) -> None:
            at = index
            while time.perf_counter() < deadline:
                await recorder.send(session, url, texts[at % len(texts)])
                at += concurrency

        await asyncio.gather(*(client(i) for i in range(concurrency)))
        return recorder.summary(time.perf_counter() - started)


async def open_loop(url: str, texts: list[str], rate: float, duration: float, max_in_flight: int) -> dict:
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        recorder = Recorder(started)
        tasks: set[asyncio.Task] = set()
        total = int(rate * duration)
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                recorder.dropped += 1
                continue
            task = asyncio.create_task(recorder.send(session, url, texts[i % len(texts)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        result = recorder.summary(max(duration, time.perf_counter() - started))
        result["offered_rps"] = rate
        return result


def _runner():
    """uvloop's event loop where installed (it comes with uvicorn[standard]): the client then takes less of
    the CPU it shares with the server it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", type=_loopback, help="the predict endpoint, on a loopback address")
    parser.add_argument("--texts", type=Path, required=True, help="JSON list of texts, sent in turn")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, help="closed loop: this many clients")
    load.add_argument("--rate", type=float, help="open loop: requests started per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--max-in-flight", type=int, default=1024)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S}]")
    if not 0 < (args.concurrency or args.max_in_flight) <= MAX_CONCURRENCY:
        parser.error(f"at most {MAX_CONCURRENCY} requests in flight")
    texts = json.loads(args.texts.read_text())
    run = _runner()
    if args.concurrency:
        result = run(closed_loop(args.url, texts, args.concurrency, args.duration))
        result["concurrency"] = args.concurrency
    else:
        result = run(open_loop(args.url, texts, args.rate, args.duration, args.max_in_flight))
    args.output.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
