"""App plugins: what the CLI, the server core and ``slm info`` know about an app, found by entry point.

An app (support, recommend, monitor, or one another package installs) declares one :class:`AppPlugin`
under the entry-point group ``slm.apps``::

    [project.entry-points."slm.apps"]
    support = "slm.apps.support.plugin:PLUGIN"

Nothing else in slm names an app: ``slm app <name>`` mounts :meth:`AppPlugin.load_cli`, the server core
(:mod:`slm.serving`) asks :meth:`AppPlugin.load_server` for routes, served bundles and start options, and
``slm info`` hands an app's bundles to :meth:`AppPlugin.load_describe`. A plugin is a description: its
hooks are ``"module:attribute"`` strings (or zero-argument loaders) imported on first use, so listing the
apps imports no FastAPI, Typer or PyTorch and ``slm --help`` stays fast on the core install.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    from slm.serving.extensions import AppServer

logger = logging.getLogger(__name__)

GROUP = "slm.apps"
# slm's own apps, for a source checkout run without installed metadata (no entry points to read).
BUILTIN = {
    "support": "slm.apps.support.plugin:PLUGIN",
    "recommend": "slm.apps.recommend.plugin:PLUGIN",
    "monitor": "slm.apps.monitor.plugin:PLUGIN",
}

Hook = str | Callable[[], Any]
# ``describe(bundle, as_json=False)``: print what an app's bundle holds (``slm info BUNDLE``).
Describe = Callable[..., None]


def load_hook(hook: Hook) -> Any:
    """The object ``hook`` names: ``"module:attr"`` (``attr`` may be dotted) imported now, or a loader's result."""
    if callable(hook):
        return hook()
    module, sep, attribute = hook.partition(":")
    if not (sep and module and attribute):
        raise ValueError(f"a hook is 'module:attribute', got {hook!r}")
    found: Any = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


@dataclass(frozen=True)
class AppPlugin:
    """One app: its name under ``slm app``, a one-line help, and hooks that are imported only when used.

    ``cli`` gives the app's ``typer.Typer`` command group; ``server`` (optional) its
    :class:`~slm.serving.extensions.AppServer`; ``describe`` (optional) prints a bundle of one of its
    ``tasks`` (the manifest ``task`` values of the bundles it writes) for ``slm info``.
    """

    name: str
    help: str
    cli: Hook
    server: Hook | None = None
    describe: Hook | None = None
    tasks: tuple[str, ...] = ()

    def owns(self, manifest: Mapping[str, Any]) -> bool:
        """Whether a bundle with this manifest is one of this app's (by its ``task``)."""
        return manifest.get("task") in self.tasks

    def load_cli(self) -> typer.Typer:
        """The app's command group (mounted as ``slm app <name>``)."""
        group: typer.Typer = load_hook(self.cli)
        return group

    def load_server(self) -> AppServer | None:
        """The app's hooks into the HTTP server, or None when it adds nothing to it."""
        if self.server is None:
            return None
        server: AppServer = load_hook(self.server)
        return server

    def load_describe(self) -> Describe | None:
        """``describe(bundle, as_json=False)`` for ``slm info``, or None when the app has none."""
        if self.describe is None:
            return None
        describe: Describe = load_hook(self.describe)
        return describe


@functools.cache
def discover_apps() -> tuple[AppPlugin, ...]:
    """Every installed app, by name; one whose plugin fails to load is logged and left out."""
    found: dict[str, AppPlugin] = {}
    for name, load in _hooks():
        try:
            plugin = load()
        except Exception as exc:  # another package's broken app must not take the whole CLI down
            logger.warning("app plugin %r failed to load: %s: %s", name, type(exc).__name__, exc)
            continue
        if not isinstance(plugin, AppPlugin):
            logger.warning("app plugin %r is a %s, not an AppPlugin", name, type(plugin).__name__)
        elif plugin.name in found:
            logger.warning("two app plugins are named %r: the first one found is used", plugin.name)
        else:
            found[plugin.name] = plugin
    return tuple(found[name] for name in sorted(found))


def find_app(name: str) -> AppPlugin | None:
    """The installed app called ``name``."""
    return next((plugin for plugin in discover_apps() if plugin.name == name), None)


def owner_of(bundle: Path) -> AppPlugin | None:
    """The app whose bundle ``bundle`` is (by its manifest's task); None for an ordinary slm bundle."""
    from slm.bundle.manifest import peek_task

    task = peek_task(bundle)
    if task is None:
        return None
    return next((plugin for plugin in discover_apps() if plugin.owns({"task": task})), None)


def _hooks() -> list[tuple[str, Callable[[], Any]]]:
    """(name, loader) of each declared plugin; slm's own when it runs from a checkout without metadata."""
    declared: list[EntryPoint] = list(entry_points(group=GROUP))
    hooks: list[tuple[str, Callable[[], Any]]] = [(point.name, point.load) for point in declared]
    try:
        distribution("slm")
    except PackageNotFoundError:
        known = {point.name for point in declared}
        hooks += [(name, functools.partial(load_hook, hook)) for name, hook in BUILTIN.items() if name not in known]
    return hooks
