"""What the server core asks of an app (:class:`AppServer`) and what it gives one (:class:`RouteContext`).

The core (:mod:`slm.serving.app`, :mod:`~slm.serving.service`, :mod:`~slm.serving.server`) names no app:
it finds each installed app's server side with :func:`slm.plugins.discover_apps` (:func:`app_servers`)
and calls these hooks. An app may

- serve bundles of its own kind inside :class:`~slm.serving.service.ModelService` (support assistants),
  sharing its workers, limits, hot reload, ``/v1/models`` and metrics: :attr:`AppServer.bundle_tasks`
  and :meth:`AppServer.open_bundles`, which returns a :class:`BundleGroup`;
- take a start option of :func:`~slm.serving.server.serve` and :func:`~slm.serving.app.create_app`
  (``monitor=``, ``recommender=``), opened once before the server listens and closed at shutdown:
  :attr:`AppServer.option`, :meth:`AppServer.open`, :meth:`AppServer.close`;
- add routes and HTML pages: :meth:`AppServer.add_routes`.

Imports no FastAPI at module level: ``slm serve`` splits its bundles (:func:`bundle_options`) before
it knows whether the serve extra is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from slm.bundle.manifest import peek_task
from slm.errors import ConfigError
from slm.plugins import discover_apps

if TYPE_CHECKING:
    from fastapi import FastAPI

    from slm.serving.batching import MicroBatcher
    from slm.serving.config import ServeConfig
    from slm.serving.service import ModelService


class Version(Protocol):
    """One loaded version of a served bundle (what a batch ran on, what hot reload replaces)."""

    @property
    def signature(self) -> tuple[int, int, int] | None: ...
    @property
    def loaded_at(self) -> float: ...
    @property
    def labels(self) -> list[str]: ...


VersionT = TypeVar("VersionT", bound=Version)


class Served(Protocol[VersionT]):
    """What the service asks of a served bundle: its batcher, hot reload, metrics labels and summary."""

    name: str
    path: Path
    current: VersionT
    failed: tuple[tuple[int, int, int] | None, float] | None

    @property
    def batcher(self) -> MicroBatcher[Any, Any]: ...
    def load_version(self) -> VersionT: ...
    def info_labels(self, loaded: VersionT) -> tuple[str, str, str, str, str]: ...
    def summary(self) -> dict[str, Any]: ...


class BundleGroup(Protocol):
    """An app's bundles served by one :class:`ModelService`, with what they share (e.g. a conversation log)."""

    @property
    def served(self) -> Mapping[str, Served[Any]]: ...

    def load(self, name: str, path: Path) -> None:
        """Load, verify and warm the bundle at ``path`` as ``name`` (an :class:`~slm.errors.SlmError` if not)."""
        ...

    def usage(self, name: str) -> str:
        """Why ``name`` cannot predict, as ``'NAME' is ...`` ends: what it is and which endpoint it answers."""
        ...

    def close(self) -> None:
        """Release what the group holds, once every batch has finished."""
        ...


class AppServer:
    """An app's hooks into the server; each one does nothing unless the app overrides it."""

    option: str | None = None  # the keyword of serve() and create_app() carrying this app's start value
    option_tasks: tuple[str, ...] = ()  # manifest tasks of bundles given as that value ('slm serve BUNDLE')
    bundle_tasks: tuple[str, ...] = ()  # manifest tasks of bundles served inside ModelService by open_bundles

    def open_bundles(self, service: ModelService, paths: list[Path]) -> BundleGroup:
        """The group that will serve this app's bundles; ``paths``: every bundle ``service`` serves.

        Called once per service, before any bundle is loaded, when one of them has a task of
        :attr:`bundle_tasks`. Files the app writes must stay out of ``paths`` (bundles are hash-verified).
        """
        raise NotImplementedError(f"{type(self).__name__} serves no bundles of its own")

    def open(self, value: Any, config: ServeConfig) -> Any:
        """The live object for this app's start option (e.g. an open monitor), made before the server listens."""
        return value

    def close(self, attached: Any) -> None:
        """Release what :meth:`open` returned (or what a caller of create_app passed), at shutdown."""

    def add_routes(self, context: RouteContext) -> None:
        """Add the app's endpoints and pages; called for every app, whether or not it has anything to serve."""


@dataclass
class RouteContext:
    """What an app's routes are given: the FastAPI app, the service, and the app's own state in them."""

    app: FastAPI
    service: ModelService
    attached: Any = None  # the app's start value (what open() returned); None when not given
    group: BundleGroup | None = None  # the app's bundles in the service; None when it serves none
    pages: set[str] = field(default_factory=set)  # every HTML page's path (browsers get a Basic-auth prompt)

    def add_page(self, path: str, html: str) -> None:
        """Serve ``html`` at ``GET path``, outside the API docs."""
        from fastapi.responses import HTMLResponse

        async def page() -> HTMLResponse:
            return HTMLResponse(html)

        self.app.get(path, response_class=HTMLResponse, include_in_schema=False)(page)
        self.pages.add(path)


@functools.cache
def app_servers() -> dict[str, AppServer]:
    """Every installed app's server side, by app name (apps that add nothing to the server are left out)."""
    servers = {plugin.name: plugin.load_server() for plugin in discover_apps()}
    return {name: server for name, server in servers.items() if server is not None}


def option_servers(options: Mapping[str, Any]) -> dict[str, AppServer]:
    """The app server taking each start option in ``options``; TypeError for an option no app takes."""
    by_option = {server.option: server for server in app_servers().values() if server.option is not None}
    unknown = sorted(set(options) - set(by_option))
    if unknown:
        raise TypeError(f"no installed app takes the start option {', '.join(map(repr, unknown))}")
    return {key: by_option[key] for key in options}


def bundle_owners(specs: list[tuple[str, Path]]) -> dict[str, str]:
    """``{served name: app name}`` of the bundles an app serves inside the service (by manifest task)."""
    tasks = {task: name for name, server in app_servers().items() for task in server.bundle_tasks}
    owners = {name: tasks.get(peek_task(path) or "") for name, path in specs}
    return {name: app for name, app in owners.items() if app is not None}


def bundle_options(specs: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], dict[str, Path]]:
    """Split off the bundles an app takes as its start option (a recommender: ``recommender=PATH``).

    Returns the other bundles and ``{option: path}``; more than one bundle for an option is a ConfigError.
    """
    tasks = {task: server.option for server in app_servers().values() if server.option for task in server.option_tasks}
    rest: list[tuple[str, Path]] = []
    found: dict[str, list[Path]] = {}
    for name, path in specs:
        option = tasks.get(peek_task(path) or "")
        if option is None:
            rest.append((name, path))
        else:
            found.setdefault(option, []).append(path)
    for option, paths in found.items():
        if len(paths) > 1:
            raise ConfigError(f"serve one {option} bundle at a time, got {len(paths)}")
    return rest, {option: paths[0] for option, paths in found.items()}
