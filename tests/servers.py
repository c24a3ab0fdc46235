"""A real Uvicorn server on loopback for the service tests, and helpers to read its answers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from slm.serving import ModelService, ServeConfig, create_app
from slm.serving.server import bind

KEY = "k" * 8 + "-test-api-key-0123"


@contextlib.contextmanager
def running(
    specs: list[tuple[str, Path]], monitor=None, recommender=None, **settings
) -> Iterator[tuple[str, ModelService]]:
    """A real Uvicorn server on 127.0.0.1 in a background thread; yields its base URL and service.

    ``monitor`` (a :class:`slm.apps.monitor.Monitor`) is served at /v1/monitor/* and /monitor,
    ``recommender`` (a :class:`slm.apps.recommend.Recommender`) at /v1/recommend/*.
    """
    config = ServeConfig(port=0, access_log=False, **settings).validated()
    service = ModelService.load(specs, config)
    sock = bind("127.0.0.1", 0)
    app = create_app(service, monitor=monitor, recommender=recommender)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=5))  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def serve_once(bundle, support_db, route: str, body: dict) -> dict:
    """``tests/serve_once.py`` in a fresh process: the reply and the heavy modules the server imported."""
    import json
    import subprocess
    import sys

    script = Path(__file__).with_name("serve_once.py")
    done = subprocess.run([sys.executable, str(script), str(bundle), str(support_db), route, json.dumps(body)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
