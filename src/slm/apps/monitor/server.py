"""The monitor app's hooks into the server core: the ``monitor=`` start option and the /v1/monitor routes.

``slm serve --monitor monitor.yaml`` and ``slm app monitor serve`` start a server with a monitor: the core
opens it here before listening and closes it at shutdown. Loaded through :mod:`slm.plugins`; cheap to
import (the monitor and its routes load when a server uses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slm.serving import log
from slm.serving.config import ServeConfig
from slm.serving.extensions import AppServer, RouteContext


class MonitorServer(AppServer):
    """``monitor=`` a monitor.yaml path or a loaded config: an open monitor behind /v1/monitor/* and /monitor."""

    option = "monitor"

    def open(self, value: Any, config: ServeConfig) -> Any:
        from slm.apps.monitor.config import load_config
        from slm.apps.monitor.monitor import Monitor

        settings = load_config(Path(value)) if isinstance(value, str | Path) else value
        running = Monitor(settings, on_alert=lambda alert: log.event("monitor_alert", **alert))
        log.event("monitor_opened", storage=running.store.engine.url.render_as_string(hide_password=True))
        return running

    def close(self, attached: Any) -> None:
        attached.close()

    def add_routes(self, context: RouteContext) -> None:
        from slm.apps.monitor.routes import add_monitor_routes

        add_monitor_routes(context)


SERVER = MonitorServer()
