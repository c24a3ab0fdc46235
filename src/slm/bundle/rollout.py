"""Roll a bundle folder forward (promote) and back (rollback), keeping the version it replaced beside it.

A served folder (``slm serve --watch BUNDLE``) changes only by renames: the new version is a complete,
verified folder before it takes the served path, and the one it replaces is kept as ``BUNDLE.previous``, so
every step can be undone (``promote(BUNDLE.previous, BUNDLE)`` swaps the two back). Which version a rollback
restores is decided by digest, not by path: the last lineage step of the served bundle names its parent's
``manifest_digest`` (:class:`slm.bundle.schema.LineageStep`), and only a folder holding exactly that
version is restored.

A swap takes two or three renames, so the served path is absent for a few microseconds between them; the
server's watcher skips a poll that finds no manifest, and a reload that the swap overtakes is retried
(:meth:`slm.serving.service.ModelService.reload_if_changed`), so no request fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from slm.bundle.manifest import MANIFEST, read_manifest
from slm.bundle.schema import Manifest
from slm.errors import BundleError, ConfigError
from slm.fileio import foreign_files

log = logging.getLogger(__name__)

PREVIOUS = ".previous"


def previous_of(target: str | Path) -> Path:
    """Where the version a promote or rollback replaced is kept: ``<target>.previous``."""
    target = Path(target)
    return target.with_name(target.name + PREVIOUS)


def version_of(manifest: Manifest) -> str | None:
    """The 12 hex digits that name a version (as every server answer does); None for a manifest without digest."""
    return manifest.manifest_digest.value[:12] if manifest.manifest_digest is not None else None


def promote(candidate: str | Path, target: str | Path) -> Path | None:
    """Make the finished bundle folder ``candidate`` the bundle at ``target`` in one rename.

    ``candidate`` is verified first (digest and every file's sha256: a broken bundle never goes live) and
    moved (copied first when it lies on another filesystem). The bundle it replaces is kept as
    ``<target>.previous``, replacing an older one only if slm wrote every file in it. ``candidate`` may be
    ``<target>.previous`` itself: the two swap, which undoes the last promote or rollback. Returns the kept
    previous version's path, or None when ``target`` held no bundle.
    """
    candidate, target = Path(candidate), Path(target)
    if not candidate.is_dir():
        raise BundleError(f"bundle to promote not found: {candidate}")
    if candidate.resolve() == target.resolve():
        raise ConfigError(f"{candidate} is already the bundle at {target}: nothing to promote")
    read_manifest(candidate)
    _check_slm_wrote(candidate, "the bundle to promote")
    return _install(candidate, target)


def rollback(target: str | Path) -> Path:
    """Restore the parent of the bundle at ``target``: the version its last lineage step names by digest.

    The parent is taken from ``<target>.previous`` when that holds it, else copied from the parent's recorded
    path (which is left as it is) when that still holds it; either way it is verified (digest and every
    file) before it goes live. The version rolled back from is kept as ``<target>.previous``, so the rollback
    can be undone with ``promote(<target>.previous, target)``. Returns that kept path.
    """
    target = Path(target)
    parent = locate_parent(target)
    previous = previous_of(target)
    if parent == previous:
        read_manifest(previous)  # digest and every file: exactly that version, intact
        kept = _install(previous, target)
    else:
        if previous.exists() or previous.is_symlink():  # before the copy: it would be refused after it
            _check_slm_wrote(previous, "the kept previous version")
        staged = _copy_beside(parent, target)
        try:
            read_manifest(staged)  # digest and every file of the copy itself, as it will be served
            kept = _install(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    assert kept is not None  # target held a bundle: locate_parent read it
    return kept


def locate_parent(target: str | Path) -> Path:
    """The folder holding the parent of the bundle at ``target``, matched by the digest in its lineage.

    ``<target>.previous`` first, then the parent's recorded path. When that parent was an intermediate that is
    gone (``slm compress`` chains trim → quantize through a temporary folder), ``<target>.previous`` is
    also accepted if it holds an older ancestor: the version served at ``target`` before the last promote.
    One-line errors: ConfigError when the bundle has no lineage or its lineage records no digest;
    BundleError when no place holds that version (paths and versions named).
    """
    target = Path(target)
    lineage = read_manifest(target, verify=False).lineage or []
    if not lineage:
        raise ConfigError(f"{target} has no lineage (it was not derived from another bundle): nothing to roll back to")
    step, previous = lineage[-1], previous_of(target)
    wanted = step.parent_digest
    if wanted is None:
        where = f" ({step.parent})" if step.parent else ""
        raise ConfigError(
            f"{target} does not record its parent's digest (written by an older slm): restore its parent{where} by hand"
        )
    recorded = Path(step.parent) if step.parent else None
    if recorded is not None and recorded.resolve() == target.resolve():
        recorded = None  # the path the bundle now has: the parent there was replaced
    places = [place for place in (previous, recorded) if place is not None]
    for place in places:
        if place.exists() and _digest_at(place) == wanted:
            return place
    ancestors = {s.parent_digest for s in lineage[:-1] if s.parent_digest is not None}
    if (recorded is None or not recorded.exists()) and previous.exists() and _digest_at(previous) in ancestors:
        return previous
    found = [f"{place} {_describe_version(place)}" for place in places if place.exists()]
    if not found:
        named = f"neither {' nor '.join(map(str, places))} exists" if len(places) > 1 else f"{places[0]} does not exist"
        raise BundleError(f"the parent of {target} (version {wanted[:12]}) is gone: {named}")
    raise BundleError(f"digest mismatch: the parent of {target} is version {wanted[:12]}, but {'; '.join(found)}")


def _digest_at(place: Path) -> str | None:
    with contextlib.suppress(BundleError):
        digest = read_manifest(place, verify=False).manifest_digest
        return digest.value if digest is not None else None
    return None


def _describe_version(place: Path) -> str:
    digest = _digest_at(place)
    return f"is version {digest[:12]}" if digest is not None else "holds no readable bundle with a digest"


# ---------------------------------------------------------------- the renames


def _check_slm_wrote(folder: Path, what: str) -> None:
    """A folder slm will move or later delete holds only files slm wrote (never delete what slm did not write)."""
    if folder.is_symlink() or not folder.is_dir():
        raise ConfigError(f"{what} {folder} is not a folder: move it away first")
    foreign = foreign_files(folder)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(f"{what} {folder} holds files slm did not write ({foreign[0]}{more}): move them away first")


def _install(source: Path, target: Path) -> Path | None:
    """Rename the verified bundle ``source`` to ``target``; what was there becomes ``<target>.previous``."""
    previous = previous_of(target)
    if not (target.exists() or target.is_symlink()):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(_on_same_filesystem(source, target), target)
        log.info("promoted %s to %s", source, target)
        return None
    _check_slm_wrote(target, "the bundle at")
    if source.resolve() == previous.resolve():
        _swap(target, previous)
        log.info("swapped %s and %s", target, previous)
        return previous
    if previous.exists() or previous.is_symlink():
        _check_slm_wrote(previous, "the kept previous version")
    staged = _on_same_filesystem(source, target)
    # The older kept version goes to a hidden ".staging" name that remove_stale_temporaries clears if this
    # process dies before deleting it; it is the one thing promote deletes, and slm wrote every file in it.
    retired = None
    if previous.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{previous.name}.{os.getpid()}.", suffix=".staging",
                                        dir=target.parent))  # fmt: skip
        os.replace(previous, retired)  # onto the fresh empty folder: rename(2) replaces an empty directory
    os.replace(target, previous)
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(previous, target)  # put the served version back where it was
        if retired is not None:
            os.replace(retired, previous)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    log.info("promoted %s to %s; the version it replaced is kept at %s", source, target, previous)
    return previous


def _swap(first: Path, second: Path) -> None:
    """Exchange two folders with three renames.

    The parking name has no ``.staging``/``.tmp`` ending, so if this process dies mid-swap no cleaner ever
    deletes the version parked there: it stays, findable, beside the other two.
    """
    parked = Path(tempfile.mkdtemp(prefix=f".{first.name}.swap.", dir=first.parent))
    os.replace(second, parked)
    try:
        os.replace(first, second)
    except BaseException:
        os.replace(parked, second)
        raise
    os.replace(parked, first)


def _on_same_filesystem(source: Path, target: Path) -> Path:
    """``source`` itself when a rename can move it to ``target``, else a copy beside ``target`` (same filesystem)."""
    if os.stat(source).st_dev == os.stat(target.parent).st_dev:
        return source
    return _copy_beside(source, target)


def _copy_beside(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle``'s listed files (nothing a user put beside them) in a staging folder beside ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".staging", dir=target.parent))
    try:
        manifest = read_manifest(bundle, verify=False)
        for rel in [*manifest.files, MANIFEST]:
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle / rel, staged / rel)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staged)
        raise
    return staged
