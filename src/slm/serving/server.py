"""Run the service with Uvicorn on a socket bound here, so a busy port is one clear error."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from slm.errors import ConfigError
from slm.serving import log
from slm.serving.app import create_app
from slm.serving.config import ServeConfig
from slm.serving.service import ModelService

if TYPE_CHECKING:
    from slm.apps.monitor.config import MonitorConfig


class _Server(uvicorn.Server):
    """Uvicorn's server, but a SIGTERM/SIGINT that shut it down gracefully ends the process with 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.event("shutting_down", signal=signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # uvicorn would re-raise it after the graceful stop


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port); ConfigError when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    specs: list[tuple[str, Path]],
    config: ServeConfig,
    *,
    log_level: str = "info",
    monitor: MonitorConfig | None = None,
    recommender: Path | None = None,
) -> None:
    """Load every bundle (and the monitor or recommender), then answer HTTP on ``config.host:config.port``."""
    log.configure(log_level)
    config = config.validated()
    sock = bind(config.host, config.port)
    try:
        service = ModelService.load(specs, config)
        running = None
        if monitor is not None:
            from slm.apps.monitor.monitor import Monitor

            running = Monitor(monitor, on_alert=lambda alert: log.event("monitor_alert", **alert))
            log.event("monitor_opened", storage=running.store.engine.url.render_as_string(hide_password=True))
        ranking = None
        if recommender is not None:
            from slm.apps.recommend.recommender import Recommender

            ranking = Recommender(recommender, threads=config.threads)
            if ranking.users:  # the first request should not pay for lazy initialisation
                ranking.rank(user=next(iter(ranking.users)), k=10)
            log.event("recommender_loaded", path=str(recommender), items=len(ranking.catalogue))
        app = create_app(service, monitor=running, recommender=ranking)
        server = _Server(
            uvicorn.Config(
                app,
                lifespan="on",
                access_log=False,
                log_config=None,
                log_level=log_level,
                timeout_graceful_shutdown=int(config.graceful_timeout) or None,
                limit_concurrency=config.max_connections,
                backlog=2048,
                server_header=False,
            )  # fmt: skip
        )
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.event("listening", url=f"http://{shown}:{port}", models=service.names,
                  max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, workers=config.workers,
                  threads=config.threads, auth=bool(config.api_keys), watch=config.watch)  # fmt: skip
        server.run(sockets=[sock])
    finally:
        sock.close()
