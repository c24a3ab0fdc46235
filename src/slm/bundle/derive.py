"""Derive a new bundle from an existing one: copy, change, re-hash, swap in atomically."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from slm.bundle.manifest import now_iso, read_manifest, write_manifest
from slm.errors import ConfigError
from slm.fileio import atomic_directory


def derive_bundle(
    parent: str | Path,
    output: str | Path,
    change: Callable[[Path, dict], dict],
    *,
    drop: Iterable[str] = (),
    step: str,
) -> dict:
    """Copy ``parent`` into a staging directory, let ``change(staging, manifest)`` edit it, then swap.

    ``drop`` lists top-level files or folders of the parent not to copy (e.g. ``"model"``). ``change``
    returns the new manifest; file hashes are recomputed and ``lineage`` gains ``step``. The
    previous bundle at ``output`` survives any failure.
    """
    parent, output = Path(parent), Path(output)
    manifest = read_manifest(parent)
    if output.resolve() == parent.resolve():
        raise ConfigError(f"output {output} is the input bundle: choose a new directory")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a directory")
    dropped = set(drop)
    with atomic_directory(output) as staging:
        for item in parent.iterdir():
            if item.name in dropped or item.name == "manifest.json":
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
        manifest = {k: v for k, v in manifest.items() if k not in {"files", "format", "format_version"}}
        lineage = list(manifest.get("lineage", []))
        lineage.append({"step": step, "parent": str(parent.resolve()), "parent_created": manifest.get("created")})
        manifest["lineage"] = lineage
        manifest["created"] = now_iso()
        manifest = change(staging, manifest)
        return write_manifest(staging, manifest)
