"""The recommend app as an slm plugin (entry point ``slm.apps: recommend``); importing it loads no hook."""

from __future__ import annotations

from slm.apps.recommend.layout import TASK
from slm.plugins import AppPlugin

HELP = "Text-based recommendation: a two-tower model on item text, a LightGBM ranker, cold-start items."

PLUGIN = AppPlugin(
    name="recommend",
    help=HELP,
    cli="slm.apps.recommend.cli:app",
    server="slm.apps.recommend.server:SERVER",
    describe="slm.apps.recommend.cli:print_info",
    tasks=(TASK,),
)
