"""``slm app``: the ready-made applications' command groups, found as plugins and mounted here.

Each app (:mod:`slm.apps`) declares its commands in its own folder and registers through the
``slm.apps`` entry-point group (:func:`slm.plugins.discover_apps`); the CLI mounts each group as
``slm app <name>`` and puts its commands under the same error guard as every other command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from slm.cli._util import app, guard_group
from slm.plugins import discover_apps, owner_of

apps = typer.Typer(help="Ready-made applications on top of slm bundles.", no_args_is_help=True)


def mount_apps() -> None:
    """Mount every installed app's command group under ``slm app``."""
    for plugin in discover_apps():
        apps.add_typer(guard_group(plugin.load_cli()), name=plugin.name, help=plugin.help)
    app.add_typer(apps, name="app")


def describe_app_bundle(bundle: Path, *, as_json: bool) -> bool:
    """Let the app that owns ``bundle`` (e.g. a recommender) describe it for ``slm info``; False if none does."""
    owner = owner_of(bundle)
    describe = owner.load_describe() if owner is not None else None
    if describe is None:
        return False
    describe(bundle, as_json=as_json)
    return True


mount_apps()
