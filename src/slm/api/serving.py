"""``serve``: answer HTTP for bundles (Uvicorn, or replicas on Ray Serve), as ``slm serve`` does.

Needs the serve extra (FastAPI, Uvicorn), never PyTorch: served bundles are exported ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from slm.errors import ConfigError
from slm.extras import require_extra
from slm.serving.config import ServeConfig


@dataclass(frozen=True)
class RayServeOptions:
    """Where and how many replicas Ray Serve runs (None: Ray Serve's or slm's default)."""

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    address: str | None = None
    replica_cpus: float | None = None


def serve(
    bundles: Sequence[str | Path],
    config: ServeConfig | None = None,
    *,
    log_level: str = "info",
    monitor: str | Path | None = None,
    ray: RayServeOptions | None = None,
) -> None:
    """Load ``bundles`` (``[NAME=]PATH``: exported bundles, support assistants, one recommender) and serve them.

    Blocks until the server stops (SIGTERM or Ctrl-C end it gracefully). ``monitor``: a monitor.yaml
    also served at /v1/monitor/* and /monitor. ``ray``: run the same app as Ray Serve replicas instead
    of one Uvicorn process (monitors and recommenders are not served on Ray yet).
    """
    require_extra("serve", what="slm serve")
    from slm.serving.config import parse_model_specs
    from slm.serving.extensions import bundle_options
    from slm.storage.sql import absolute_database_url

    config = config or ServeConfig()
    # A feedback file named relative to here stays here, whichever folder a worker (a Ray replica) runs in.
    config = replace(config, feedback_db=absolute_database_url(config.feedback_db))
    if ray is not None and monitor is not None:
        raise ConfigError("--monitor is not served on Ray Serve yet: use --engine uvicorn for it")
    specs, options = bundle_options(parse_model_specs([str(b) for b in bundles]))  # e.g. recommender=PATH
    if monitor is not None:
        options = {"monitor": Path(monitor), **options}  # the monitor app reads monitor.yaml when it opens
    if ray is not None:
        if options:  # (a monitor was refused above)
            option, path = next(iter(options.items()))
            raise ConfigError(f"{option} bundles ({path}) are not served on Ray Serve yet: "
                              "use --engine uvicorn for them")  # fmt: skip
        from slm.serving.ray_serve import serve_on_ray

        serve_on_ray(specs, config, replicas=ray.replicas, min_replicas=ray.min_replicas,
                     max_replicas=ray.max_replicas, address=ray.address,
                     replica_cpus=1.0 if ray.replica_cpus is None else ray.replica_cpus,
                     log_level=log_level)  # fmt: skip
        return
    from slm.serving.server import serve as run_server

    run_server(specs, config, log_level=log_level, **options)
