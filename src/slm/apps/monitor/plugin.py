"""The monitor app as an slm plugin (entry point ``slm.apps: monitor``); importing it loads no hook."""

from __future__ import annotations

from slm.plugins import AppPlugin

HELP = "Financial sentiment monitor: classify a news stream, track entities over time, alert on negative spikes."

PLUGIN = AppPlugin(name="monitor", help=HELP, cli="slm.apps.monitor.cli:app", server="slm.apps.monitor.server:SERVER")
