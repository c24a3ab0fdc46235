"""slm: small, fast, domain-specific language models on an ordinary CPU.

``slm.train``, ``slm.tune``, ``slm.evaluate`` and ``slm.load`` are imported on first use, so ``import slm``
stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# A library logs and leaves the output to the program: no record reaches logging's last-resort stderr handler
# unless the program (or the CLI, through slm.logs.attach_cli_handler) configures a handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["Bundle", "__version__", "evaluate", "load", "train", "tune"]


def __getattr__(name: str) -> Any:
    if name in {"train", "tune", "evaluate", "load", "Bundle"}:
        # importlib, not an import statement: the package root is a facade over slm.api, and the modules
        # below the API that read __version__ from here must not depend on the API (see [tool.importlinter]).
        return getattr(importlib.import_module("slm.api"), name)
    raise AttributeError(f"module 'slm' has no attribute {name!r}")
