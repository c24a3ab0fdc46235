"""``slm serve``: the HTTP service for exported bundles (FastAPI + Uvicorn, no PyTorch).

Registered on the main Typer app by :mod:`slm.cli`. Every option can also come from an environment
variable, ``SLM_SERVE_<OPTION>`` (e.g. ``SLM_SERVE_PORT=9000``); a flag given on the command line wins.
With ``--engine ray`` the same app runs as Ray Serve replicas (:mod:`slm.serving.ray_serve`).

The server's own options (address, API keys, limits, timeouts, logs) are defined once, in
:mod:`slm.serving.options`, and added to ``slm serve`` as to the ``serve`` commands of ``slm app monitor``
and ``slm app recommend``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from slm.cli import _command
from slm.errors import ConfigError
from slm.serving.config import ServeConfig
from slm.serving.options import serve_option as _opt
from slm.serving.options import server_options

DEFAULTS = ServeConfig()


class LongTexts(StrEnum):
    truncate = "truncate"
    reject = "reject"


class Engine(StrEnum):
    uvicorn = "uvicorn"
    ray = "ray"


@_command(no_args_is_help=True)
@server_options
def serve(
    bundles: Annotated[
        list[str],
        typer.Argument(
            metavar="[NAME=]BUNDLE...",
            envvar="SLM_SERVE_BUNDLES",
            show_default=False,
            help="Exported bundles to serve (from 'slm export' or 'slm compress') or support assistants "
            "(from 'slm app support build'); NAME defaults to the directory's name and is the {name} in "
            "/v1/models/{name}/predict or /v1/support/{name}/answer.",
        ),
    ],
    max_batch: Annotated[int, _opt("max_batch", "Texts per model batch (1: no batching).")] = DEFAULTS.max_batch,
    max_wait_ms: Annotated[
        float,
        _opt(
            "max_wait_ms",
            "Longest a batch waits to fill while a worker is free (0: run at once; "
            "batches still grow while every worker is busy).",
        ),
    ] = DEFAULTS.max_wait_ms,
    max_queue: Annotated[
        int, _opt("max_queue", "Texts queued per model before requests get 503.")
    ] = DEFAULTS.max_queue,
    workers: Annotated[int | None, _opt("workers", "Batches run at once (default: one per core, plus one).")] = None,
    threads: Annotated[int, _opt("threads", "ONNX Runtime threads per batch.")] = DEFAULTS.threads,
    max_texts: Annotated[int, _opt("max_texts", "Most texts in one request.")] = DEFAULTS.max_texts,
    max_chars: Annotated[int, _opt("max_chars", "Longest text, in characters.")] = DEFAULTS.max_chars,
    long_texts: Annotated[LongTexts, _opt("long_texts", "Texts over --max-chars: cut or refuse.")] = LongTexts.truncate,
    top_k: Annotated[int, _opt("top_k", "Labels listed per text unless a request asks otherwise.")] = DEFAULTS.top_k,
    watch: Annotated[bool, _opt("watch", "Reload a bundle when it is replaced on disk.", "--watch/--no-watch")] = False,
    watch_interval: Annotated[
        float, _opt("watch_interval", "Seconds between checks with --watch.")
    ] = DEFAULTS.watch_interval,
    support_db: Annotated[
        Path,
        _opt(
            "support_db",
            "SQLite file logging every support-assistant turn (created when an assistant is served; "
            "export the handed-off questions with 'slm app support unanswered').",
        ),
    ] = DEFAULTS.support_db,
    monitor: Annotated[
        Path | None,
        _opt("monitor", "Also serve this financial sentiment monitor (monitor.yaml): /v1/monitor/* and /monitor."),
    ] = None,
    engine: Annotated[
        Engine,
        _opt(
            "engine",
            "uvicorn: one server process; ray: replicas of the same app on Ray Serve (pip install 'slm[ray]').",
        ),
    ] = Engine.uvicorn,
    replicas: Annotated[
        int | None, _opt("replicas", "With --engine ray: copies of the app, each loading every bundle (default 1).")
    ] = None,
    min_replicas: Annotated[
        int | None,
        _opt("min_replicas", "With --engine ray: autoscale, down to this many replicas (and --max-replicas)."),
    ] = None,
    max_replicas: Annotated[
        int | None, _opt("max_replicas", "With --engine ray: autoscale, up to this many replicas (and --min-replicas).")
    ] = None,
    address: Annotated[
        str | None,
        _opt(
            "address",
            "With --engine ray: the Ray cluster to deploy on (auto, or ray://HEAD:10001); "
            "default: start one on this machine.",
        ),
    ] = None,
    replica_cpus: Annotated[
        float | None,
        _opt(
            "replica_cpus",
            "With --engine ray: CPUs Ray reserves for each replica (default 1, fractions allowed; "
            "--workers then defaults to one per CPU, plus one).",
        ),
    ] = None,
    *,
    server: object,
) -> None:
    """Serve bundles over HTTP with micro-batching: predict, models, health, metrics, a playground at /.

    Support assistants answer at /v1/support/answer, with a chat page at /support. With --monitor,
    the sentiment monitor ingests at /v1/monitor/ingest, with a dashboard at /monitor. A recommender
    bundle ('slm app recommend train') ranks items at /v1/recommend/rank.

    Example: slm serve runs/tickets-int8 --port 8000, then open http://127.0.0.1:8000/ or
    curl -d '{"text": "my card has not arrived"}' http://127.0.0.1:8000/v1/models/tickets-int8/predict

    With --engine ray --replicas 2, the same API is answered by two Ray Serve replicas.
    """
    ray_options = {"--replicas": replicas, "--min-replicas": min_replicas, "--max-replicas": max_replicas,
                   "--address": address, "--replica-cpus": replica_cpus}  # fmt: skip
    given = [flag for flag, value in ray_options.items() if value is not None]
    if engine is Engine.uvicorn and given:
        raise ConfigError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray only")
    if engine is Engine.ray and monitor is not None:
        raise ConfigError("--monitor is not served on Ray Serve yet: use --engine uvicorn for it")
    try:
        from slm.serving.config import parse_model_specs
        from slm.serving.server import serve as run_server
    except ImportError as exc:
        raise ConfigError(
            f"slm serve needs the serve extra ({exc.name} is not installed): pip install 'slm[serve]'"
        ) from None
    from slm.serving.options import ServerOptions

    assert isinstance(server, ServerOptions)  # from server_options
    config = server.config(
        max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
        workers=workers or _default_workers(engine, replica_cpus), threads=threads, max_texts=max_texts,
        max_chars=max_chars, long_texts=long_texts.value, top_k=top_k, watch=watch, watch_interval=watch_interval,
        support_db=support_db,
    )  # fmt: skip
    from slm.serving.extensions import bundle_options

    specs, options = bundle_options(parse_model_specs(bundles))  # a recommender bundle: recommender=PATH
    if monitor is not None:
        options = {"monitor": monitor, **options}  # the monitor app reads monitor.yaml when it opens
    if engine is Engine.ray:
        if options:  # (--monitor was refused above)
            option, path = next(iter(options.items()))
            raise ConfigError(f"{option} bundles ({path}) are not served on Ray Serve yet: "
                              "use --engine uvicorn for them")  # fmt: skip
        from slm.serving.ray_serve import serve_on_ray

        serve_on_ray(specs, config, replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                     address=address, replica_cpus=1.0 if replica_cpus is None else replica_cpus,
                     log_level=server.log_level.value)  # fmt: skip
        return
    run_server(specs, config, log_level=server.log_level.value, **options)


def _default_workers(engine: Engine, replica_cpus: float | None) -> int:
    """One batch in flight per core, plus one: per machine for Uvicorn, per replica's CPUs on Ray."""
    from slm.serving.config import default_workers

    if engine is Engine.uvicorn:
        return default_workers()
    return max(1, min(math.ceil(replica_cpus or 1.0) + 1, 8))
