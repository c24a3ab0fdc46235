"""A real server on loopback for the service tests (Uvicorn in a thread, or Ray Serve replicas), and helpers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from slm.serving import ModelService, ServeConfig, create_app
from slm.serving.admission import Admission
from slm.serving.server import bind, make_server

KEY = "k" * 8 + "-test-api-key-0123"
# The engines a server test runs on. Ray is left out of the fast lane (``pytest -m "not slow"``): starting
# the cluster and deploying replicas takes a minute, and the Uvicorn runs check the same app.
ENGINES = ["uvicorn", pytest.param("ray", marks=pytest.mark.slow(reason="starts a local Ray cluster"))]


@contextlib.contextmanager
def running(
    specs: list[tuple[str, Path]],
    monitor=None,
    recommender=None,
    *,
    ray: RayCluster | None = None,
    slm_protocol: bool = False,
    **settings,
) -> Iterator[tuple[str, ModelService | None]]:
    """A real Uvicorn server on 127.0.0.1 in a background thread; yields its base URL and service.

    ``monitor`` (a :class:`slm.apps.monitor.Monitor`) is served at /v1/monitor/* and /monitor,
    ``recommender`` (a :class:`slm.apps.recommend.Recommender`) at /v1/recommend/*. With ``ray``
    (the ``ray_cluster`` fixture), the same app runs as two Ray Serve replicas instead, and the
    service, which lives in the replicas, is None. ``slm_protocol``: Uvicorn as ``slm serve`` runs it
    (:func:`slm.serving.server.make_server`: slm's HTTP protocol with its limits and early refusals).
    """
    if ray is not None:
        assert monitor is None and recommender is None, "the monitor and recommenders are not served on Ray"
        with ray.running(specs, **settings) as served:
            yield served
        return
    config = ServeConfig(port=0, access_log=False, **settings).validated()
    service = ModelService.load(specs, config)
    sock = bind("127.0.0.1", 0)
    app = create_app(service, monitor=monitor, recommender=recommender)
    if slm_protocol:
        server = make_server(app, config, early_checks=(Admission(service),))
    else:
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """A local Ray cluster whose Serve proxy listens on one port: apps are deployed on it one at a time.

    Serve has one HTTP port per cluster and the app needs the route "/", so a server started while
    another runs replaces it, and the outer one is deployed again when the inner one ends.
    """

    REPLICAS = 2

    def __init__(self) -> None:
        import ray
        from ray import serve

        ray.init(address="local", include_dashboard=False, num_cpus=4, logging_level="WARNING")
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self._stack: list[tuple[list[tuple[str, Path]], dict[str, Any], tuple[int, int] | None]] = []

    def _deploy(self, specs: list[tuple[str, Path]], settings: dict[str, Any], bounds: tuple[int, int] | None) -> str:
        from slm.serving.ray_serve import deploy

        config = ServeConfig(host="127.0.0.1", port=self.port, access_log=False, **settings)
        if bounds is None:
            return deploy(specs, config, replicas=self.REPLICAS)
        return deploy(specs, config, min_replicas=bounds[0], max_replicas=bounds[1])

    @contextlib.contextmanager
    def running(
        self, specs: list[tuple[str, Path]], *, autoscale: tuple[int, int] | None = None, **settings
    ) -> Iterator[tuple[str, None]]:
        """The app deployed with two replicas (or autoscaling between the ``autoscale`` bounds)."""
        url = self._deploy(specs, settings, autoscale)
        self._stack.append((specs, settings, autoscale))
        try:
            yield url, None
        finally:
            self._stack.pop()
            if self._stack:
                self._deploy(*self._stack[-1])
            else:
                from slm.serving.ray_serve import undeploy

                undeploy()

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


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
