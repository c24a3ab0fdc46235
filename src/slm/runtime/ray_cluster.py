"""Joining a Ray cluster, or starting one for this process: shared by ``slm predict`` and ``slm serve --engine ray``."""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from slm.errors import ConfigError, one_line


def import_ray(*parts: str) -> ModuleType:
    """``ray``, with ``ray.<part>`` imported too (``data``, ``serve``); ConfigError with the install hint."""
    try:
        ray = importlib.import_module("ray")
        for part in parts:
            importlib.import_module(f"ray.{part}")
    except ImportError as exc:
        raise ConfigError(
            f"--engine ray needs the ray extra ({exc.name} is not installed): pip install 'slm[ray]'"
        ) from None
    return ray


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (Ray's carry whole tracebacks), else its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0] if lines else type(exc).__name__)


def connect(ray: ModuleType, address: str | None, *, debug: bool = False, worker_logs: bool = False) -> None:
    """Join the cluster at ``address`` (``auto``, ``ray://HEAD:10001``), or start a local one (None).

    A local cluster keeps Ray's default token authentication (without Ray's warning about it on every
    start) and runs without the dashboard. ``worker_logs`` forwards what the
    workers print (a served replica's access log) to this process's terminal. Ray's C++ core logs only fatal errors
    (``RAY_BACKEND_LOG_LEVEL=info`` brings it back): Ray Data logs an error-level line per actor about
    constructor arguments kept in the object store, which is how it always runs them.
    """
    if ray.is_initialized():
        return
    level = logging.DEBUG if debug else logging.WARNING
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "debug" if debug else "fatal")
    for name in ("ray.serve", "ray.data"):
        logging.getLogger(name).setLevel(level)
    # "Token authentication is enabled for this Ray cluster": Ray's secure default, said on every start
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(max(level, logging.ERROR))
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=level, log_to_driver=worker_logs or debug)
        else:
            ray.init(address=address, logging_level=level, log_to_driver=worker_logs or debug)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        reason = first_line(exc)
        where = "start a local Ray cluster" if address is None else f"connect to the Ray cluster at {address}"
        raise ConfigError(f"cannot {where}: {reason}") from None
