"""The HTTP service for exported bundles: FastAPI + Uvicorn over the torch-free runtime.

>>> from pathlib import Path
>>> from slm.serving import ModelService, ServeConfig, create_app
>>> config = ServeConfig(max_batch=32).validated()
>>> app = create_app(ModelService.load([("tickets", Path("runs/tickets-int8"))], config))

Any ASGI server can run ``app``; ``slm serve`` does the same from the command line with Uvicorn.
"""

from slm.serving.app import create_app
from slm.serving.config import ServeConfig
from slm.serving.service import ModelService

__all__ = ["ModelService", "ServeConfig", "create_app"]
