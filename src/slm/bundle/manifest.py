"""The bundle manifest: what a bundle is, and the file hashes that prove it is intact."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from slm.errors import BundleError
from slm.fileio import write_json_atomic
from slm.models.registry import sha256_file

MANIFEST = "manifest.json"
FORMAT = "slm-bundle"
FORMAT_VERSION = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path."""
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def write_manifest(root: Path, manifest: dict) -> dict:
    """Add format fields and file hashes, then write ``manifest.json``."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    manifest["files"] = hash_files(root)
    write_json_atomic(Path(root) / MANIFEST, manifest)
    return manifest


def read_manifest(root: Path, *, verify: bool = True) -> dict:
    """Read and (by default) verify a bundle; BundleError names the first problem found."""
    root = Path(root)
    if not root.exists():
        raise BundleError(f"bundle not found: {root}")
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle or is incomplete: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not an slm bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{root}: bundle format version {manifest.get('format_version')} is not supported "
            f"(this slm reads version {FORMAT_VERSION})"
        )
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists and has the recorded sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{root}: manifest lists no files")
    for rel, expected in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{root}: manifest lists a file outside the bundle ({rel})")
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{root} is incomplete: {rel} is missing")
        if sha256_file(file) != expected:
            raise BundleError(f"{root} has been modified: {rel} does not match its sha256 in the manifest")
