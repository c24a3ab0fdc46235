"""The ``slm`` command line: one module per command group, each a thin layer over :mod:`slm.api`.

:mod:`slm.cli._util` holds the Typer ``app``, the error guard and the shared options; importing a
command module registers its commands on ``app`` (in the order below, which is the order of
``slm --help``); :mod:`slm.cli.apps` mounts the installed apps' groups under ``slm app``. Nothing
outside this package imports it.
"""

from __future__ import annotations

import importlib

from slm.cli._util import app

COMMAND_MODULES = (
    "train", "pretrain", "tune", "evaluate", "predict", "suggest", "info", "quickstart", "compress", "serve",
    "feedback", "update", "rollout", "redact", "audit", "apps", "bench",
)  # fmt: skip

for _module in COMMAND_MODULES:
    importlib.import_module(f"slm.cli.{_module}")

__all__ = ["app"]
