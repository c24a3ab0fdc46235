"""The command-line options of every slm server (``slm serve``, ``slm app monitor serve``, ``slm app recommend
serve``): address, API keys, CORS, connection and request limits, timeouts, logs. Defined once here.

Each can also be set by ``SLM_SERVE_<OPTION>``. Imports Typer and :mod:`slm.serving.config` only (no FastAPI):
``slm --help`` reads these definitions without the serve extra installed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from slm.serving.config import ServeConfig, read_api_keys

DEFAULTS = ServeConfig()


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def serve_option(name: str, help: str, *flags: str) -> typer.models.OptionInfo:
    """An option that can also be set by ``SLM_SERVE_<NAME>``."""
    # typer.Option is declared to return Any (it stands in for a default value)
    return cast(typer.models.OptionInfo, typer.Option(*flags, envvar=f"SLM_SERVE_{name.upper()}", help=help))


@dataclass(frozen=True)
class ServerOptions:
    """The values of :data:`SERVER_OPTIONS` given to one command."""

    host: str
    port: int
    api_key_file: Path | None
    insecure: bool
    cors_origin: list[str] | None
    max_connections: int
    max_body_bytes: int
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    graceful_timeout: float
    access_log: bool
    redact: bool
    log_level: LogLevel

    def config(self, **settings: Any) -> ServeConfig:
        """A :class:`ServeConfig` with these options and ``settings`` (the model options of ``slm serve``)."""
        return ServeConfig(  # checked by the server, before it binds the port
            host=self.host, port=self.port, insecure=self.insecure, cors_origins=tuple(self.cors_origin or ()),
            api_keys=read_api_keys(self.api_key_file) if self.api_key_file else (),
            max_connections=self.max_connections, max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes, header_timeout=self.header_timeout,
            body_timeout=self.body_timeout, graceful_timeout=self.graceful_timeout, access_log=self.access_log,
            redact_stored=self.redact, **settings,
        )  # fmt: skip


# name -> (type with its option, default): every command that runs the HTTP server takes these.
SERVER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "host": (
        Annotated[str, serve_option("host", "Address to listen on (0.0.0.0: every interface; then --api-key-file "
                                    "or --insecure).")],
        DEFAULTS.host,
    ),
    "port": (Annotated[int, serve_option("port", "TCP port (0: any free port).")], DEFAULTS.port),
    "api_key_file": (
        Annotated[Path | None, serve_option("api_key_file", "File of API keys, one per line: then every endpoint "
                                            "but /healthz and /readyz needs one (Authorization: Bearer KEY).")],
        None,
    ),
    "insecure": (
        Annotated[bool, serve_option("insecure", "Allow a --host other machines can reach without --api-key-file "
                                     "(e.g. behind a proxy that authenticates).", "--insecure")],
        False,
    ),
    "cors_origin": (
        Annotated[list[str] | None, serve_option("cors_origin", "Let pages from this origin call the API "
                                                 "(repeatable; CORS is off).")],
        None,
    ),
    "max_connections": (
        Annotated[int, serve_option("max_connections", "Open connections or requests at once; past it every "
                                    "request but /healthz gets 503.")],
        DEFAULTS.max_connections,
    ),
    "max_body_bytes": (
        Annotated[int, serve_option("max_body_bytes", "Largest request body, in bytes (413).")],
        DEFAULTS.max_body_bytes,
    ),
    "max_header_bytes": (
        Annotated[int, serve_option("max_header_bytes", "Largest request line and headers together, in bytes "
                                    "(431).")],
        DEFAULTS.max_header_bytes,
    ),
    "header_timeout": (
        Annotated[float, serve_option("header_timeout", "Seconds a client has to send a whole request head "
                                      "(408).")],
        DEFAULTS.header_timeout,
    ),
    "body_timeout": (
        Annotated[float, serve_option("body_timeout", "Seconds a client has to send a whole request body after "
                                      "its head (408).")],
        DEFAULTS.body_timeout,
    ),
    "graceful_timeout": (
        Annotated[float, serve_option("graceful_timeout", "Seconds in-flight requests get on shutdown.")],
        DEFAULTS.graceful_timeout,
    ),
    "access_log": (
        Annotated[bool, serve_option("access_log", "One JSON line per request on stderr.",
                                     "--access-log/--no-access-log")],
        DEFAULTS.access_log,
    ),
    "redact": (
        Annotated[bool, serve_option("redact", "Replace personal data (e-mail addresses; phone, card, IBAN and ID "
                                     "numbers; IPs; URLs; birth dates) with placeholders in every text the server "
                                     "stores (support log, feedback; monitor items follow monitor.yaml's redact). "
                                     "Request texts never go into logs either way.",
                                     "--redact/--no-redact")],
        DEFAULTS.redact_stored,
    ),
    "log_level": (Annotated[LogLevel, serve_option("log_level", "Least severe log level shown.")], LogLevel.info),
}  # fmt: skip


def server_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every option of :data:`SERVER_OPTIONS`, passed to it as ``server`` (a :class:`ServerOptions`).

    The options are added to the signature Typer reads, after the command's own parameters.
    """
    own = inspect.signature(command, eval_str=True)
    kept = [parameter for name, parameter in own.parameters.items() if name != "server"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
             for name, (kind, default) in SERVER_OPTIONS.items()]  # fmt: skip

    @functools.wraps(command)
    def with_options(**given: Any) -> None:
        server = ServerOptions(**{name: given.pop(name) for name in SERVER_OPTIONS})
        command(**given, server=server)

    signature = own.replace(parameters=[*kept, *added])
    with_options.__signature__ = signature  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return with_options
