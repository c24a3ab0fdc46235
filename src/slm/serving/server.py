"""Run the service with Uvicorn on a socket bound here, so a busy port is one clear error.

Uvicorn runs slm's own HTTP protocol (:mod:`slm.serving.protocol`: head timeout and size, JSON 503s), with
WebSockets off: the app has none.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from slm.errors import ConfigError
from slm.serving import log
from slm.serving.admission import Admission
from slm.serving.app import create_app
from slm.serving.config import ServeConfig, check_exposure, is_loopback
from slm.serving.extensions import option_servers
from slm.serving.protocol import EarlyCheck, guarded_protocol
from slm.serving.service import ModelService


class _Server(uvicorn.Server):
    """Uvicorn's server, but a SIGTERM/SIGINT that shut it down gracefully ends the process with 0, and what is
    loaded by the time it listens is left out of Python's full garbage collections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Everything loaded by now (libraries, bundles, the app, the warmed models) stays out of the cyclic
        # collector's full passes. Each pass walked all of it and held the event loop: at 4x overload on 2 cores,
        # 503 answers slowed to 50-170 ms in bursts every ~2.5 s, which was the p99; frozen, 34 ms. (Reference
        # counting still frees frozen objects; only cycles among them would stay.) Here, after the start-up imports:
        # 45-83 ms over three runs after 50 s of load; frozen before Uvicorn started, one run gave 111 ms.
        gc.collect()
        gc.freeze()

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


def make_server(
    app: Any, config: ServeConfig, *, log_level: str = "info", early_checks: tuple[EarlyCheck, ...] = ()
) -> uvicorn.Server:
    """The Uvicorn server for ``app`` with every limit of ``config`` (run it with ``server.run(sockets=[sock])``).

    ``early_checks``: refuse requests before the app runs (:class:`~slm.serving.admission.Admission`).
    """
    protocol = guarded_protocol(
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
        max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections,
        early_checks=early_checks,
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


def serve(specs: list[tuple[str, Path]], config: ServeConfig, *, log_level: str = "info", **options: Any) -> None:
    """Load every bundle and open each app's start option, then answer HTTP on ``config.host:config.port``.

    ``options``: the apps' start values by option name (``monitor=`` a monitor config, ``recommender=``
    a recommender bundle; None: not given), each opened by its app
    (:meth:`~slm.serving.extensions.AppServer.open`) once the bundles are loaded.
    """
    log.configure(log_level)
    config = config.validated()
    check_exposure(config)
    given = {option: value for option, value in options.items() if value is not None}
    servers = option_servers(given)
    sock = bind(config.host, config.port)
    try:
        service = ModelService.load(specs, config)
        attached = {option: servers[option].open(value, config) for option, value in given.items()}
        app = create_app(service, **attached)
        server = make_server(app, config, log_level=log_level, early_checks=(Admission(service),))
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
