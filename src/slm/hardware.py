"""The machine a measurement ran on: CPU, load, threads and versions, captured in one place.

Every report that records timings (training reports, ``slm bench``, the scripts in ``bench/``) takes its
machine fields from :func:`machine_info` (or :func:`load_average` for a reading before and after a run),
so the same field always means the same thing. :func:`cpu_info` is also what quantization reads to pick
kernels the CPU has.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Instruction-set extensions that decide which int8/bf16 kernels run: the ones a report lists.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


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


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (2 decimals): how busy the machine was; None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # AttributeError: no os.getloadavg (Windows)
        return None


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of the distributions ``names`` (None for one that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """This machine and process now, for a report next to its timings.

    ``cpu``: ``model``, ``logical_cpus`` and which of :data:`SIMD_FLAGS` it has; ``cpu_count``; ``python``
    (version); ``platform`` (OS, kernel, architecture); ``load_average`` (see :func:`load_average`);
    ``threads``: PyTorch's intra-op threads when PyTorch is loaded, else None (loading it here would cost
    seconds); ``versions`` of ``packages`` (see :func:`package_versions`). Cheap: nothing is imported.
    """
    cpu = cpu_info()
    torch = sys.modules.get("torch")
    return {
        "cpu": {
            "model": cpu["model"],
            "logical_cpus": cpu["logical_cpus"],
            "flags": [f for f in SIMD_FLAGS if f in cpu["flags"]],
        },
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
        "threads": torch.get_num_threads() if torch is not None else None,
        "versions": package_versions(packages),
    }
