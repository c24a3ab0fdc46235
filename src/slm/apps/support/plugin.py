"""The support app as an slm plugin (entry point ``slm.apps: support``); importing it loads no hook."""

from __future__ import annotations

from slm.apps.support.layout import TASK
from slm.plugins import AppPlugin

HELP = "Customer-service assistant: intents, out-of-scope detection, FAQ retrieval and human handoff."

PLUGIN = AppPlugin(
    name="support",
    help=HELP,
    cli="slm.apps.support.cli:app",
    server="slm.apps.support.server:SERVER",
    tasks=(TASK,),
)
