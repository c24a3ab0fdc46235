"""TEMPORARY stand-in until the apps branch lands its plugin interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def discover_apps() -> list[Any]:
    return []


_ = Path
