"""The HTTP service for exported bundles: FastAPI + Uvicorn over the torch-free runtime.

>>> from pathlib import Path
>>> from slm.serving import ModelService, ServeConfig, create_app
>>> config = ServeConfig(max_batch=32).validated()
>>> app = create_app(ModelService.load([("tickets", Path("runs/tickets-int8"))], config))

Any ASGI server can run ``app``; ``slm serve`` does the same from the command line with Uvicorn.

The names are imported on first use: ``slm.serving.config`` (what the CLI reads to build its options) must
import without FastAPI, which only the ``serve`` extra installs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slm.serving.app import create_app
    from slm.serving.config import ServeConfig
    from slm.serving.service import ModelService

__all__ = ["ModelService", "ServeConfig", "create_app"]

_HOMES = {"create_app": "slm.serving.app", "ServeConfig": "slm.serving.config", "ModelService": "slm.serving.service"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'slm.serving' has no attribute {name!r}")
