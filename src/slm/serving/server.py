"""Run the service with Uvicorn on a socket bound here, so a busy port is one clear error.

Uvicorn runs slm's own HTTP protocol (:mod:`slm.serving.protocol`: head timeout and size, JSON 503s), with
WebSockets off: the app has none.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from slm.errors import ConfigError
from slm.serving import log
from slm.serving.app import create_app
from slm.serving.config import ServeConfig, check_exposure, is_loopback
from slm.serving.protocol import guarded_protocol
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


def make_server(app: Any, config: ServeConfig, *, log_level: str = "info") -> uvicorn.Server:
    """The Uvicorn server for ``app`` with every limit of ``config`` (run it with ``server.run(sockets=[sock])``)."""
    protocol = guarded_protocol(
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
        max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections,
    )
    return _Server(
        uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level=log_level,
            timeout_graceful_shutdown=int(config.graceful_timeout) or None,
            limit_concurrency=None,  # the protocol applies config.max_connections, answering in JSON
            backlog=2048,
            server_header=False,
        )
    )  # fmt: skip


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
    check_exposure(config)
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
        server = make_server(create_app(service, monitor=running, recommender=ranking), config, log_level=log_level)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.event("listening", url=f"http://{shown}:{port}", models=service.names,
                  max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, workers=config.workers,
                  threads=config.threads, auth=bool(config.api_keys), watch=config.watch)  # fmt: skip
        if not config.api_keys and not is_loopback(host):
            log.event(
                "insecure",
                level=logging.WARNING,
                url=f"http://{shown}:{port}",
                message="no API keys (--insecure): anyone who can reach this address can use every endpoint",
            )
        server.run(sockets=[sock])
    finally:
        sock.close()
