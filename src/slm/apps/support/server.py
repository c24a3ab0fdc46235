"""The support app's hooks into the server core: assistant bundles served as models, and the support routes.

Loaded by the server core through :mod:`slm.plugins` (nothing in :mod:`slm.serving` names this app). Cheap
to import: the served-assistant and route modules load when a server uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slm.apps.support.layout import TASK
from slm.serving.extensions import AppServer, BundleGroup, RouteContext

if TYPE_CHECKING:
    from slm.serving.service import ModelService


class SupportServer(AppServer):
    """Assistant bundles (by their manifest's task) join the service's models; /v1/support/* answers them."""

    bundle_tasks = (TASK,)

    def open_bundles(self, service: ModelService, paths: list[Path]) -> BundleGroup:
        from slm.apps.support.served import Assistants

        return Assistants.open(service, paths)

    def add_routes(self, context: RouteContext) -> None:
        from slm.apps.support.routes import add_support_routes

        add_support_routes(context)


SERVER = SupportServer()
