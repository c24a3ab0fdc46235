"""Financial sentiment monitor: classify a stream, track entities over time, alert on negative spikes.

``slm app monitor run|report|serve --config monitor.yaml``; see :mod:`slm.apps.monitor.config`.
Importing this package is cheap: the storage (SQLAlchemy) and runtime load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IngestStats", "Monitor", "MonitorConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name in ("MonitorConfig", "load_config"):
        from slm.apps.monitor import config

        return getattr(config, name)
    if name in ("IngestStats", "Monitor"):
        from slm.apps.monitor import monitor

        return getattr(monitor, name)
    raise AttributeError(name)
