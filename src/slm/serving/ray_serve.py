"""``slm serve --engine ray``: the same FastAPI app as N Ray Serve replicas, fixed or autoscaled.

Each replica loads every bundle itself (:meth:`ModelService.load`) and serves :func:`create_app` with
its micro-batchers, middleware and error bodies; Ray Serve's HTTP proxy spreads the requests over the
replicas and the replica that answered is named in an ``X-Slm-Replica`` header. Ray is imported only
here, and only when used.

On a real cluster every node that may host a replica needs slm installed and the bundles at the same
absolute path (``slm serve`` makes the paths absolute and loads them once itself, so a broken bundle is
refused in one line before anything is deployed).

/metrics adds up every replica on a node: the replicas of one deployment write their values to a
prometheus_client multiprocess folder (``PROMETHEUS_MULTIPROC_DIR``, fresh for each deployment, the
same path on every node). A node's folder holds only that node's replicas, so on several nodes scrape
each node's proxy: Ray routes a request to a replica on the proxy's own node first, and
``slm_replicas`` says how many replicas an answer covers.

Limits: the app's own (body size and read timeout, API keys, JSON errors, no redirects, the refusal of
an open ``--host`` without keys) hold here too. The request-head timeout and size limit and the JSON 503
past ``--max-connections`` are slm's Uvicorn protocol (:mod:`slm.serving.protocol`), which Ray's HTTP
proxy does not run (here ``--max-connections`` is each replica's ``max_ongoing_requests``): put a reverse
proxy in front of it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders

from slm.errors import ConfigError, SlmError, one_line
from slm.runtime import ray_cluster
from slm.serving import log
from slm.serving.app import create_app
from slm.serving.config import ServeConfig, check_exposure
from slm.serving.middleware import ASGIApp, Message, Receive, Scope, Send
from slm.serving.server import bind
from slm.serving.service import ModelService

APP = "slm"  # the Ray Serve application (and deployment) name
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REPLICA_HEADER = "X-Slm-Replica"
_metrics_dirs: dict[str, str] = {}  # app name -> the multiprocess folder of its live deployment (on this node)


def import_ray() -> tuple[ModuleType, ModuleType]:
    """``ray`` and ``ray.serve``; ConfigError with the install hint when Ray is missing."""
    ray = ray_cluster.import_ray("serve")
    return ray, ray.serve


# ---------------------------------------------------------------- the replica


class ReplicaHeaders:
    """Names the replica that answered (``X-Slm-Replica``) and leaves ``X-Request-ID`` to Ray's proxy.

    The proxy puts a request id in every request, which the access log adopts, and adds it to the
    answer itself: without this the answer would carry the header twice.
    """

    def __init__(self, app: ASGIApp, *, replica: str) -> None:
        self.app, self.replica = app, replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                del headers["x-request-id"]
                headers.append(REPLICA_HEADER, self.replica)
            await send(message)

        await self.app(scope, receive, tagged)


class SlmReplica:
    """One replica: every bundle loaded and warmed, then the slm app (its lifespan starts the batchers)."""

    def __init__(self, specs: list[tuple[str, Path]], config: ServeConfig, log_level: str = "info") -> None:
        from ray import serve

        log.configure(log_level)
        shared = os.environ.get(METRICS_ENV)
        if shared:  # another node: the folder exists only where the deployment was made
            Path(shared).mkdir(parents=True, exist_ok=True)
        self.replica = serve.get_replica_context().replica_tag
        self.service = ModelService.load(specs, config)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.service)
        app.add_middleware(ReplicaHeaders, replica=self.replica)
        return app

    def __del__(self) -> None:
        """Ray calls this after the app's shutdown: drop this process's live gauges (queue depth, ready)."""
        if os.environ.get(METRICS_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


# ---------------------------------------------------------------- deploying


def scaling_options(
    replicas: int | None, min_replicas: int | None, max_replicas: int | None, replica_cpus: float, max_batch: int = 32
) -> dict[str, Any]:
    """Ray Serve deployment options for a fixed count or autoscaling bounds; ConfigError when impossible.

    Autoscaling adds a replica when they hold more than ``max_batch`` requests each on average: a few
    requests in flight are what micro-batching feeds on, not a sign of overload (Ray's default is 2).
    """
    if (min_replicas is None) != (max_replicas is None):
        raise ConfigError("--min-replicas and --max-replicas are autoscaling bounds: give both or neither")
    if replica_cpus <= 0:
        raise ConfigError(f"--replica-cpus must be positive (got {replica_cpus:g})")
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": replica_cpus}}
    if min_replicas is None or max_replicas is None:
        count = 1 if replicas is None else replicas
        if count < 1:
            raise ConfigError(f"--replicas must be at least 1 (got {count})")
        return {**options, "num_replicas": count}
    if replicas is not None:
        raise ConfigError("give --replicas N or --min-replicas/--max-replicas (autoscaling), not both")
    if min_replicas < 0:
        raise ConfigError(f"--min-replicas cannot be negative (got {min_replicas})")
    if max_replicas < 1:
        raise ConfigError(f"--max-replicas must be at least 1 (got {max_replicas})")
    if min_replicas > max_replicas:
        raise ConfigError(f"--min-replicas ({min_replicas}) cannot exceed --max-replicas ({max_replicas})")
    autoscaling = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                   "initial_replicas": max(min_replicas, 1), "target_ongoing_requests": max_batch}  # fmt: skip
    return {**options, "autoscaling_config": autoscaling}


def initial_replicas(options: dict[str, Any]) -> int:
    autoscaling = options.get("autoscaling_config")
    replicas: int = autoscaling["initial_replicas"] if autoscaling else options["num_replicas"]
    return replicas


def absolute(specs: list[tuple[str, Path]], config: ServeConfig) -> tuple[list[tuple[str, Path]], ServeConfig]:
    """Bundle and support-log paths made absolute: a replica's working folder is not this one."""
    resolved = [(name, Path(path).resolve()) for name, path in specs]
    return resolved, replace(config, support_db=config.support_db.resolve())


def deploy(
    specs: list[tuple[str, Path]],
    config: ServeConfig,
    *,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    replica_cpus: float = 1.0,
    log_level: str = "info",
    name: str = APP,
) -> str:
    """Deploy the app as ``name`` at route ``/`` on the Ray cluster this process is connected to; its URL.

    Serve's HTTP proxies start on ``config.host:config.port`` unless Serve already runs there (then its
    own host and port stay). An app of the same name is deleted first: each deployment gets fresh
    replicas and a fresh metrics folder. Returns once every replica is ready.
    """
    _, serve = import_ray()
    config = config.validated()
    options = scaling_options(replicas, min_replicas, max_replicas, replica_cpus, config.max_batch)
    specs, config = absolute(specs, config)
    quiet = "DEBUG" if log_level == "debug" else "WARNING"  # Serve's own logs; slm's access log covers requests
    serve.start(http_options={"host": config.host, "port": config.port}, logging_config={"log_level": quiet})
    undeploy(name)
    shared = tempfile.mkdtemp(prefix=f"slm-metrics-{name}-")
    options["ray_actor_options"]["runtime_env"] = {"env_vars": {METRICS_ENV: shared, "TOKENIZERS_PARALLELISM": "false"}}
    deployment = serve.deployment(
        name=name,
        max_ongoing_requests=config.max_connections,  # the app's own queue limit answers 503 before Ray queues
        graceful_shutdown_timeout_s=config.graceful_timeout,
        graceful_shutdown_wait_loop_s=0.5,
        **options,
    )(serve.ingress()(SlmReplica))
    try:
        serve.run(deployment.bind(specs, config, log_level), name=name, route_prefix="/",
                  logging_config={"enable_access_log": False, "log_level": quiet})  # fmt: skip
    except RuntimeError as exc:  # a replica failed to start: Ray gives up after its retries
        reason = _replica_error(serve, name) or ray_cluster.first_line(exc)
        _metrics_dirs[name] = shared
        undeploy(name)
        raise SlmError(f"Ray Serve could not start the replicas of '{name}': {reason}") from None
    _metrics_dirs[name] = shared
    return base_url(config.host, config.port)


def undeploy(name: str = APP) -> None:
    """Delete the app ``name`` (its replicas finish their requests first) and its metrics folder."""
    _, serve = import_ray()
    if name in serve.status().applications:
        serve.delete(name)
    shared = _metrics_dirs.pop(name, None)
    if shared:
        shutil.rmtree(shared, ignore_errors=True)


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _replica_error(serve: ModuleType, name: str) -> str | None:
    """The last line of the traceback Serve keeps for a failed deployment (the error a replica raised)."""
    application = serve.status().applications.get(name)
    for deployment in application.deployments.values() if application else ():
        lines = [line.strip() for line in (deployment.message or "").splitlines() if line.strip()]
        if lines:
            return one_line(lines[-1])
    return None


# ---------------------------------------------------------------- the command


def serve_on_ray(
    specs: list[tuple[str, Path]],
    config: ServeConfig,
    *,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    address: str | None = None,
    replica_cpus: float = 1.0,
    log_level: str = "info",
) -> None:
    """Serve on Ray until SIGINT or SIGTERM, then delete the app (its replicas drain) and return.

    ``address`` is a Ray cluster (``auto``, ``ray://head:10001``...): there Serve keeps running for other
    apps. None starts a local cluster for this process (even if one runs already), stopped at the end.
    """
    config = config.validated()
    check_exposure(config)
    options = scaling_options(replicas, min_replicas, max_replicas, replica_cpus, config.max_batch)
    ray, _ = import_ray()
    specs, config = absolute(specs, config)
    asyncio.run(ModelService.load(specs, config).close())  # a broken bundle: one line now, not after deploying
    log.configure(log_level)  # after that check: its model_loaded lines are not the replicas'
    if config.port == 0:
        with bind(config.host, 0) as sock:  # Serve needs a real port: take a free one
            config = replace(config, port=sock.getsockname()[1])
    else:
        bind(config.host, config.port).close()  # a busy port: one clear error before Ray starts
    local = address is None
    ray_cluster.connect(ray, address, debug=log_level == "debug", worker_logs=True)
    try:
        if local:
            _check_cpus(ray, initial_replicas(options) * replica_cpus)
        stop = _stop_on_signals()
        url = deploy(specs, config, replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                     replica_cpus=replica_cpus, log_level=log_level)  # fmt: skip
        auto = options.get("autoscaling_config")
        scaling = {"min_replicas": min_replicas, "max_replicas": max_replicas} if auto else {"replicas": replicas or 1}
        log.event("listening", url=url, engine="ray", models=[name for name, _ in specs], **scaling,
                  replica_cpus=replica_cpus,
                  max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, workers=config.workers,
                  threads=config.threads, auth=bool(config.api_keys), watch=config.watch)  # fmt: skip
        stop.wait()
        log.event("shutting_down", signal=stop.signal)
        undeploy()  # the replicas finish their requests; a local cluster (and its Serve) then ends with ray.shutdown
        log.event("stopped")
    finally:
        ray.shutdown()


def _check_cpus(ray: ModuleType, needed: float) -> None:
    """A local cluster never grows: refuse replicas that could never all be placed (Serve would wait forever)."""
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        raise ConfigError(f"the replicas need {needed:g} CPUs and this machine's Ray has {available:g}: "
                          "lower --replicas or --replica-cpus (fractions are fine, e.g. 0.5)")  # fmt: skip


class _Stop(threading.Event):
    signal: str = ""


def _stop_on_signals() -> _Stop:
    """An event set by SIGINT or SIGTERM (instead of Ray's own SIGTERM handler, which exits at once)."""
    stop = _Stop()

    def handle(sig: int, _: FrameType | None) -> None:
        stop.signal = signal.Signals(sig).name
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stop
