"""What this machine's CPU is and can do (read once from /proc/cpuinfo on Linux)."""

from __future__ import annotations

import contextlib
import os
import platform
from functools import cache
from pathlib import Path


@cache
def cpu_info() -> dict:
    """``model`` name, ``logical_cpus`` and the set of instruction-set ``flags`` (empty where unknown)."""
    model: str = platform.processor() or platform.machine()
    flags: frozenset[str] = frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    return {"model": model, "logical_cpus": os.cpu_count(), "flags": flags}
