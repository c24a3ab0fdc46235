"""The service under load and in operation: micro-batching, back-pressure, shutdown, hot reload, startup.

Most tests serve the kept untrained tiny bundle (``untrained_exported``). The SIGTERM test serves the trained
one (``exported``, so it is slow): it signals 0.3 s after sending six requests of 64 texts, meaning them to be
still running then, and the untrained model (2 layers of width 32) may have answered them all by that time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from slm.bundle.derive import derive_bundle
from slm.serving.batching import MicroBatcher, QueueFull, ShuttingDown
from tests.servers import ENGINES, error_of, running, serve_once

LONG = "I was charged twice for the same card payment at the shop yesterday and I want my money back " * 3


class Sizes:
    """Records what the batcher reports (its observer interface)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def batch(self, texts: int, seconds: float) -> None:
        self.batches.append(texts)

    def queue(self, texts: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass


def lengths(texts: list[str]) -> tuple[np.ndarray, str]:
    return np.array([len(t) for t in texts]), "context"


# ---------------------------------------------------------------- the batcher itself


def test_batcher_groups_waiting_requests_and_routes_rows_back() -> None:
    gate = threading.Event()

    def gated(texts: list[str]) -> tuple[np.ndarray, str]:
        gate.wait(5)
        return lengths(texts)

    async def scenario() -> tuple[list, list[int]]:
        sizes = Sizes()
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(gated, executor=pool, max_batch=8, max_queue=64, concurrency=1, observer=sizes)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(["a"]))
            await asyncio.sleep(0.05)  # the first batch is running and holds the only slot
            rest = [asyncio.ensure_future(batcher.submit(["x" * i] * 3)) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            assert batcher.queued == 15
            gate.set()
            answers = await asyncio.gather(first, *rest)
            await batcher.close()
        return answers, sizes.batches

    answers, batches = asyncio.run(scenario())
    assert batches == [1, 6, 6, 3]  # whole requests, at most max_batch texts, in arrival order
    assert [a[1] for a in answers] == ["context"] * 6
    assert answers[0][0].tolist() == [1]
    assert [a[0].tolist() for a in answers[1:]] == [[i] * 3 for i in range(1, 6)]


def test_batcher_waits_up_to_max_wait_for_company() -> None:
    async def scenario(wait_ms: float) -> list[int]:
        sizes = Sizes()
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(lengths, executor=pool, max_batch=8, max_wait_ms=wait_ms, observer=sizes)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(["a"]))
            await asyncio.sleep(0.02)
            await asyncio.gather(first, batcher.submit(["b"]))
            await batcher.close()
        return sizes.batches

    assert asyncio.run(scenario(300)) == [2]
    assert asyncio.run(scenario(0)) == [1, 1]


def test_batcher_refuses_when_full_reports_errors_and_drains_on_close() -> None:
    gate = threading.Event()
    calls = []

    def flaky(texts: list[str]) -> tuple[np.ndarray, str]:
        calls.append(texts)
        gate.wait(5)
        if texts == ["boom"]:
            raise RuntimeError("model failed")
        return lengths(texts)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(flaky, executor=pool, max_batch=2, max_queue=4, concurrency=1)
            batcher.start()
            boom = asyncio.ensure_future(batcher.submit(["boom"]))
            await asyncio.sleep(0.05)
            queued = [asyncio.ensure_future(batcher.submit(["q1", "q2"])) for _ in range(2)]
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull) as full:
                await batcher.submit(["one too many"])
            assert full.value.retry_after >= 1
            gate.set()
            with pytest.raises(RuntimeError, match="model failed"):
                await boom
            closing = asyncio.ensure_future(batcher.close())
            await asyncio.sleep(0)
            with pytest.raises(ShuttingDown):
                await batcher.submit(["late"])
            await closing
            assert [(await q)[0].tolist() for q in queued] == [[2, 2], [2, 2]]  # finished despite the close

    asyncio.run(scenario())
    assert calls == [["boom"], ["q1", "q2"], ["q1", "q2"]]


# ---------------------------------------------------------------- in the real server


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_requests_share_batches(untrained_exported, engine, request) -> None:
    ray = request.getfixturevalue("ray_cluster") if engine == "ray" else None  # two replicas: counts add up

    def burst(url: str, n: int) -> tuple[list[int], str]:
        with ThreadPoolExecutor(n) as pool:
            codes = list(pool.map(lambda i: httpx.post(url + "/v1/models/tiny/predict",
                                                       json={"text": f"my card {i} has not arrived"}).status_code,
                                  range(n)))  # fmt: skip
        return codes, httpx.get(url + "/metrics").text

    with running([("tiny", untrained_exported)], ray=ray, max_wait_ms=100, workers=1) as (url, _):
        codes, metrics = burst(url, 24)
        assert codes == [200] * 24
        assert _metric(metrics, 'slm_batch_size_texts_sum{model="tiny"}') == 24
        assert _metric(metrics, 'slm_batch_size_texts_count{model="tiny"}') <= 12  # two or more per batch
    with running([("tiny", untrained_exported)], ray=ray, max_batch=1, workers=1) as (url, _):
        codes, metrics = burst(url, 24)
        assert codes == [200] * 24
        assert _metric(metrics, 'slm_batch_size_texts_count{model="tiny"}') == 24  # batching off: one each


def test_overload_gets_fast_503s_and_recovers(untrained_exported) -> None:
    with running([("tiny", untrained_exported)], workers=1, max_batch=8, max_queue=16, max_texts=8) as (url, service):

        def heavy(_: int) -> httpx.Response:
            return httpx.post(url + "/v1/models/tiny/predict", json={"texts": [LONG] * 8}, timeout=60)

        with ThreadPoolExecutor(48) as pool:
            answers = list(pool.map(heavy, range(96)))
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0
        busy = next(a for a in answers if a.status_code == 503)
        assert error_of(busy, 503)["code"] == "overloaded" and int(busy.headers["retry-after"]) >= 1
        assert service.models["tiny"].batcher.queued == 0
        after = [httpx.post(url + "/v1/models/tiny/predict", json={"text": "change my pin"}) for _ in range(5)]
        assert [a.status_code for a in after] == [200] * 5
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, 'slm_rejected_requests_total{model="tiny",reason="queue_full"}') == codes.count(503)


def _hold_the_worker(service) -> threading.Event:
    """Occupy the service's only batch thread until the returned event is set: batches then wait in line."""
    release = threading.Event()
    service.executor.submit(release.wait, 30)
    return release


def test_a_full_queue_is_refused_before_the_app_and_the_connection_stays_open(untrained_exported) -> None:
    settings = {"workers": 1, "max_batch": 4, "max_queue": 4, "max_texts": 4}
    with running([("tiny", untrained_exported)], slm_protocol=True, **settings) as (url, service):
        predict = url + "/v1/models/tiny/predict"
        release = _hold_the_worker(service)
        with ThreadPoolExecutor(2) as pool, httpx.Client() as client:
            waiting = [pool.submit(httpx.post, predict, json={"texts": ["change my pin"] * 4}, timeout=60)
                       for _ in range(2)]  # fmt: skip
            deadline = time.monotonic() + 10
            while not service.models["tiny"].batcher.full:  # one batch dispatched (held), one queued: 4 texts
                assert time.monotonic() < deadline, "the queue never filled"
                time.sleep(0.01)
            busy = client.post(predict, json={"text": "where is my card"})
            assert error_of(busy, 503)["code"] == "overloaded" and int(busy.headers["retry-after"]) >= 1
            assert "x-request-id" not in busy.headers  # answered by the protocol: the app never saw it
            release.set()
            assert [f.result().status_code for f in waiting] == [200, 200]
            again = client.post(predict, json={"text": "where is my card"})  # the same kept-alive connection
            assert again.status_code == 200 and again.json()["predictions"][0]["label"]
            assert client.get(url + "/healthz").status_code == 200
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, 'slm_rejected_requests_total{model="tiny",reason="queue_full"}') == 1
        assert _metric(metrics, 'slm_http_requests_total{method="POST",route="/v1/models/{name}/predict",'
                                'status="503"}') == 1  # fmt: skip


def test_admission_refuses_only_what_the_app_would_refuse_the_same_way(untrained_exported) -> None:
    from slm.serving import ModelService, ServeConfig
    from slm.serving.admission import Admission
    from tests.servers import KEY

    config = ServeConfig(api_keys=(KEY,), workers=1, max_queue=4, max_texts=4).validated()
    service = ModelService.load([("tiny", untrained_exported)], config)
    try:
        admission = Admission(service)

        def scope(path: str, method: str = "POST", key: str | None = KEY) -> dict:
            headers = [(b"x-api-key", key.encode())] if key else []
            return {"type": "http", "method": method, "path": path, "headers": headers}

        assert admission(scope("/v1/models/tiny/predict")) is None  # the queue is empty
        service.models["tiny"].batcher._queued = 4  # full, as if four texts waited
        refusal = admission(scope("/v1/models/tiny/predict"))
        assert refusal is not None and (refusal.status, refusal.code) == (503, "overloaded")
        assert dict(refusal.headers)[b"retry-after"] == b"1"
        assert admission(scope("/v1/models/tiny/predict", key=None)) is None  # the app answers 401
        assert admission(scope("/v1/models/tiny/predict", key="wrong-" + KEY)) is None
        assert admission(scope("/v1/models/other/predict")) is None  # the app answers 404
        assert admission(scope("/v1/models/tiny/feedback")) is None
        assert admission(scope("/v1/models/tiny/predict", method="GET")) is None
    finally:
        service.executor.shutdown()


def test_batch_threads_yield_to_the_event_loop(untrained_exported) -> None:
    with running([("tiny", untrained_exported)], workers=2, batch_nice=7) as (url, service):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        niceness = {service.executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result() for _ in range(4)}
        assert niceness == {min(base + 7, 19)}
        assert httpx.post(url + "/v1/models/tiny/predict", json={"text": "change my pin"}).status_code == 200
    with running([("tiny", untrained_exported)], workers=1, batch_nice=0) as (_, service):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert service.executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result() == base


def test_batch_nice_out_of_range_is_one_line() -> None:
    from slm.errors import ConfigError
    from slm.serving import ServeConfig

    with pytest.raises(ConfigError, match=r"--batch-nice must be between 0 and 19 \(got 20\)"):
        ServeConfig(batch_nice=20).validated()


# ---------------------------------------------------------------- hot reload


def _relabelled(source: Path, output: Path, prefix: str) -> None:
    """A new version of ``source`` whose labels are renamed: a real bundle that answers visibly differently."""
    derive_bundle(source, output, lambda _, manifest: replace(manifest, labels=[prefix + x for x in manifest.labels]),
                  step="relabel")  # fmt: skip


def test_watch_reloads_a_replaced_bundle_and_survives_a_broken_one(untrained_exported, tmp_path) -> None:
    served = tmp_path / "served"
    shutil.copytree(untrained_exported, served)
    with running([("tiny", served)], watch=True, watch_interval=0.1) as (url, _):
        predict = url + "/v1/models/tiny/predict"
        before = httpx.post(predict, json={"text": "my card has not arrived"}).json()["predictions"][0]["label"]
        _relabelled(untrained_exported, served, "v2:")  # staged, then swapped in with a rename, as every slm step does
        deadline = time.monotonic() + 20
        while (
            label := httpx.post(predict, json={"text": "my card has not arrived"}).json()["predictions"][0]["label"]
        ) == before:
            assert time.monotonic() < deadline, "the new bundle was not picked up"
            time.sleep(0.1)
        assert label == "v2:" + before
        # A change in place that breaks the bundle: the served version stays, the failure is counted.
        manifest = json.loads((served / "manifest.json").read_text())
        (served / "onnx" / "model.onnx").write_bytes(b"not a model")
        (served / "manifest.json").write_text(json.dumps({**manifest, "created": "later"}))
        deadline = time.monotonic() + 20
        while 'slm_model_reloads_total{model="tiny",result="failed"}' not in (
            metrics := httpx.get(url + "/metrics").text
        ):
            assert time.monotonic() < deadline, "the broken bundle was not noticed"
            time.sleep(0.1)
        assert _metric(metrics, 'slm_model_reloads_total{model="tiny",result="ok"}') == 1
        assert httpx.post(predict, json={"text": "my card has not arrived"}).json()["predictions"][0]["label"] == label
        assert httpx.get(url + "/readyz").status_code == 200


# ---------------------------------------------------------------- the command: startup, shutdown, logs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "the server exited"
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server never became ready")


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly(exported) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SLM_SERVE_PORT": str(port),
        "SLM_SERVE_MAX_BATCH": "1",
        "SLM_SERVE_WORKERS": "1",
        "SLM_SERVE_MAX_QUEUE": "512",
    }
    process = subprocess.Popen([sys.executable, "-m", "slm", "serve", f"tiny={exported}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, url + "/v1/models/tiny/predict",
                                   json={"texts": [LONG] * 64}, timeout=60) for _ in range(6)]  # fmt: skip
            time.sleep(0.3)  # the requests are in: one runs, the rest wait in the queue
            process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 6
        assert all(len(a.json()["predictions"]) == 64 for a in answers)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=1)
    events = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.index("listening") < names.index("shutting_down") < names.index("stopped")
    access = [e for e in events if e["event"] == "request" and e["path"] == "/v1/models/tiny/predict"]
    assert len(access) == 6 and all(e["status"] == 200 and e["texts"] == 64 and e["duration_ms"] > 0 for e in access)
    assert all(e["model"] == "tiny" and len(e["request_id"]) == 16 for e in access)


def _serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def test_startup_refuses_what_it_cannot_serve_in_one_line(untrained_bundle, untrained_exported, tmp_path) -> None:
    cases = [
        ((str(tmp_path / "absent"),), 4, "bundle not found"),
        ((str(untrained_bundle),), 4, "slm export"),
        ((str(untrained_exported), "--max-batch", "0"), 2, "--max-batch"),
        ((str(untrained_exported), "--api-key-file", str(tmp_path / "nokeys")), 2, "does not exist"),
        (("bad name=" + str(untrained_exported),), 2, "model name"),
    ]
    broken = tmp_path / "broken"
    shutil.copytree(untrained_exported, broken)
    (broken / "onnx" / "model.onnx").write_bytes(b"tampered")
    cases.append(((str(broken),), 4, "modified"))
    for args, code, message in cases:
        done = _serve(*args, "--port", "0")
        assert done.returncode == code, (args, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _serve(str(untrained_exported), "--port", str(taken.getsockname()[1]))
        assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr


def test_the_server_never_imports_torch(untrained_exported, tmp_path) -> None:
    result = serve_once(untrained_exported, tmp_path / "unused.sqlite", "/v1/models/served/predict",
                        {"text": "my card has not arrived"})  # fmt: skip
    assert result["heavy"] == [] and result["reply"]["predictions"][0]["label"]
