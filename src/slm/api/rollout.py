"""``promote`` and ``rollback``: change the version at a bundle path (often one ``slm serve --watch`` serves).

Core install only: reading manifests and renaming folders needs neither PyTorch nor ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slm.bundle import rollout
from slm.bundle.manifest import read_manifest


@dataclass(frozen=True)
class Rollout:
    """What a promote or rollback did: the version now at ``bundle``, where it came from, what was kept."""

    bundle: Path
    version: str | None  # 12 hex digits of the manifest digest, as every server answer names it
    source: Path  # the folder the new version came from (moved, or copied for a rollback to a recorded parent)
    previous: Path | None  # where the replaced version is kept (None: there was none)
    previous_version: str | None


def promote(candidate: str | Path, bundle: str | Path) -> Rollout:
    """Make the verified bundle ``candidate`` the one at ``bundle``; the replaced one is kept as BUNDLE.previous.

    ``promote("served.previous", "served")`` undoes the last promote or rollback. See
    :func:`slm.bundle.rollout.promote`.
    """
    candidate, bundle = Path(candidate), Path(bundle)
    replaced = _version_at(bundle)
    kept = rollout.promote(candidate, bundle)
    return Rollout(bundle, _version_at(bundle), candidate, kept, replaced if kept is not None else None)


def rollback(bundle: str | Path) -> Rollout:
    """Restore the parent (by lineage digest) of the bundle at ``bundle``; see :func:`slm.bundle.rollout.rollback`.

    One-line ConfigError when the bundle has no lineage to follow, BundleError when its parent is gone or a
    folder holds another version than the one recorded.
    """
    bundle = Path(bundle)
    replaced = _version_at(bundle)
    source = rollout.locate_parent(bundle)
    kept = rollout.rollback(bundle)
    return Rollout(bundle, _version_at(bundle), source, kept, replaced)


def _version_at(bundle: Path) -> str | None:
    """The version at ``bundle`` (no file hashing: only named here, verified where it matters)."""
    if not (bundle / "manifest.json").is_file():
        return None
    return rollout.version_of(read_manifest(bundle, verify=False))
