"""The worker side of the benchmark: JSON lines on stdin/stdout, one model per process.

Standalone on purpose (standard library and numpy only): slm's own worker imports it as
``slm.benchmark.isolated.protocol`` and the Optimum worker, which runs in another virtual environment
without slm, imports it as ``protocol`` from the folder both scripts live in.

A worker loads its model, answers ``{"event": "ready", ...}`` and then serves one command per line:

- ``{"cmd": "latency", "texts": [...]}``: each text predicted alone (batch 1); per-call seconds.
- ``{"cmd": "throughput", "texts": [...], "batch_size": 32}``: the texts in consecutive batches of
  ``batch_size``, one call each, in the given order; the total seconds.
- ``{"cmd": "predict", "texts": [...], "batch_size": 32}``: argmax label index per text.
- ``{"cmd": "rss"}``: peak and current resident memory of this process.
- ``{"cmd": "quit"}``.

Every answer is one JSON line; a failing command answers ``{"error": "..."}``. Library chatter on
stdout is diverted to stderr so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Pin the usual thread pools before any numeric library is imported."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def memory_mb() -> dict:
    """Peak and current resident set size of this process, in MB (10^6 bytes).

    The peak is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process image.
    ``ru_maxrss`` is only the fallback, because Linux carries it over ``fork`` + ``exec``, so a worker
    spawned by a large parent would report the parent's size.
    """
    status = {}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    status[key] = int(value.split()[0]) * 1024 / 1e6  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = status.get("VmHWM")
    source = "VmHWM"
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # kilobytes on Linux
        source = "ru_maxrss"
    current = status.get("VmRSS")
    return {
        "peak_rss_mb": round(peak, 1),
        "rss_mb": None if current is None else round(current, 1),
        "peak_source": source,
    }


def _claim_stdout():
    """A private handle on the real stdout; fd 1 is pointed at stderr from here on."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)
    return channel


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def serve(load: Callable[[], tuple[Callable, list[str], dict]], spawned_at: float | None, load_only: bool) -> int:
    """Load the model with ``load()`` and answer commands until ``quit`` or end of input.

    ``load`` returns ``(predict_proba, labels, info)`` where ``predict_proba(texts, batch_size)``
    gives an ``(n, k)`` array in ``labels`` order and ``info`` describes the engine; ``load`` imports
    what it needs first and puts the seconds the model load alone took in ``info["model_load_s"]``.
    """
    channel = _claim_stdout()
    main_at = time.time()

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    started = time.perf_counter()
    try:
        predict_proba, labels, info = load()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        traceback.print_exc()
        send({"event": "error", "error": _error_text(exc)})
        return 1
    load_s = time.perf_counter() - started
    ready_at = time.time()
    info = dict(info)
    model_load_s = info.pop("model_load_s", load_s)
    send(
        {
            "event": "ready",
            "model_load_s": model_load_s,
            "imports_and_load_s": load_s,
            "process_to_ready_s": None if spawned_at is None else ready_at - spawned_at,
            "process_to_main_s": None if spawned_at is None else main_at - spawned_at,
            "labels": list(labels),
            "info": info,
            "memory_after_load": memory_mb(),
            "pid": os.getpid(),
        }
    )
    if load_only:
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            command = message.get("cmd")
            if command == "quit":
                send({"ok": True})
                return 0
            send(_answer(command, message, predict_proba))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            if isinstance(exc, KeyboardInterrupt):
                raise
            traceback.print_exc()
            send({"error": _error_text(exc)})
    return 0


def _answer(command: str, message: dict, predict_proba: Callable) -> dict:
    texts = [str(t) for t in message.get("texts", [])]
    batch_size = int(message.get("batch_size", 32))
    clock = time.perf_counter
    if command == "latency":
        latencies = []
        for text in texts:
            start = clock()
            predict_proba([text], 1)
            latencies.append(clock() - start)
        return {"seconds": latencies}
    if command == "throughput":
        start = clock()
        for i in range(0, len(texts), batch_size):
            predict_proba(texts[i : i + batch_size], batch_size)
        return {"seconds": clock() - start, "n": len(texts)}
    if command == "predict":
        start = clock()
        proba = predict_proba(texts, batch_size)
        seconds = clock() - start
        return {"argmax": [int(i) for i in proba.argmax(axis=1)], "seconds": seconds}
    if command == "rss":
        return memory_mb()
    raise ValueError(f"unknown command {command!r}")
