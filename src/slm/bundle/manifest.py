"""Reading and writing a bundle's manifest: the file hashes that prove a bundle intact, and a digest of the manifest.

This is the one module that reads and writes ``manifest.json``; its structure is the typed
:class:`~slm.bundle.schema.Manifest`. The files are listed with their sha256; the manifest itself
(labels, components, thresholds, the file list...) is covered by ``manifest_digest``: a sha256 of
its canonical JSON, or an HMAC-SHA256 signature when a key is configured (``SLM_BUNDLE_KEY``, or
``SLM_BUNDLE_KEY_FILE`` naming a file). An unkeyed digest catches edits and corruption but anyone can
recompute it; only a signature proves who wrote the bundle. Loading code opens a bundle's files
through :func:`bundle_path`, which admits only paths inside the bundle folder that the manifest lists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from slm.bundle.schema import DIGEST_KEY, FORMAT, FORMAT_VERSION, READABLE_VERSIONS, Manifest, parse
from slm.errors import BundleError, ConfigError
from slm.fileio import write_json_atomic
from slm.models.registry import sha256_file

MANIFEST = "manifest.json"
KEY_ENV = "SLM_BUNDLE_KEY"
KEY_FILE_ENV = "SLM_BUNDLE_KEY_FILE"

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except its own manifest, keyed by POSIX relative path.

    A bundle nested inside (an assistant's intent bundle) is hashed with its manifest, like any other file.
    """
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path != root / MANIFEST
    }


# ---------------------------------------------------------------------- key and digest
def bundle_key() -> bytes | None:
    """The signing key: ``SLM_BUNDLE_KEY`` (its UTF-8 bytes) or the contents of the file ``SLM_BUNDLE_KEY_FILE``
    names (surrounding whitespace stripped); None when neither is set. Read on every call, so a
    long-running process sees a changed environment."""
    value = os.environ.get(KEY_ENV) or None
    file = os.environ.get(KEY_FILE_ENV) or None
    if value is not None and file is not None:
        raise ConfigError(f"both {KEY_ENV} and {KEY_FILE_ENV} are set: set only one")
    if value is not None:
        return value.encode("utf-8")
    if file is None:
        return None
    try:
        key = Path(file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the bundle key file {file} ({KEY_FILE_ENV}): {exc.strerror}") from None
    if not key:
        raise ConfigError(f"the bundle key file {file} ({KEY_FILE_ENV}) is empty")
    return key


def canonical_bytes(manifest: Mapping[str, Any] | Manifest) -> bytes:
    """The manifest without its digest as canonical JSON: sorted keys, no spaces, ASCII (so valid UTF-8)."""
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    body = {k: v for k, v in data.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def manifest_digest(manifest: Mapping[str, Any] | Manifest, key: bytes | None) -> dict[str, str]:
    """``{"algorithm", "value"}`` (the JSON of ``manifest_digest``): HMAC-SHA256 with ``key``, else a plain sha256.

    Computed over JSON, so the digest of a typed manifest is that of the file it is written as.
    """
    data = canonical_bytes(manifest)
    if key is None:
        return {"algorithm": "sha256", "value": hashlib.sha256(data).hexdigest()}
    return {"algorithm": "hmac-sha256", "value": hmac.new(key, data, hashlib.sha256).hexdigest()}


def integrity_summary(manifest: Manifest) -> str:
    """How a loaded (hence verified) manifest was checked, for ``slm info``."""
    algorithm = manifest.manifest_digest.algorithm if manifest.manifest_digest is not None else None
    if algorithm == "hmac-sha256":
        return "manifest signature (hmac-sha256) verified"
    if algorithm == "sha256":
        return f"manifest sha256 verified (not signed: set {KEY_ENV} to sign bundles)"
    return "manifest not integrity-checked (format version 1)"


# ---------------------------------------------------------------------- writing
def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Set the format fields and the hashes of the files under ``root``, then write the manifest with its
    digest (signed when a key is set). Returns the manifest as written.

    The format, the file hashes and the digest are always this function's: a caller's copies (e.g. a
    parent bundle's) are replaced.
    """
    root = Path(root)
    files = hash_files(root)
    return _write(root, replace(manifest, format=FORMAT, format_version=FORMAT_VERSION, files=files), bundle_key())


def _write(root: Path, manifest: Manifest, key: bytes | None) -> Manifest:
    """Digest (or sign) ``manifest``, check it as a reader will, and write it atomically."""
    data = json.loads(json.dumps(replace(manifest, manifest_digest=None).to_json()))  # what readers will parse
    data[DIGEST_KEY] = manifest_digest(data, key)
    written = parse(root, data)  # a writer's mistake is refused here, not by every later load
    write_json_atomic(root / MANIFEST, data)
    return written


def sign_bundle(root: Path) -> Manifest:
    """Verify bundle ``root`` and rewrite its manifest signed with the configured key.

    For bundles written before a key was configured (unsigned, or format version 1): once a key is
    set, unsigned bundles are refused. Files are not touched; the manifest is replaced atomically.
    """
    key = bundle_key()
    if key is None:
        raise ConfigError(f"no bundle key is configured: set {KEY_ENV} or {KEY_FILE_ENV} to sign bundles")
    root = Path(root)
    manifest = _read(root, verify=True, key=key, accept_unsigned=True)
    return _write(root, replace(manifest, format_version=FORMAT_VERSION), key)


# ---------------------------------------------------------------------- reading
def read_manifest(root: Path, *, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest; BundleError names the first problem found.

    Always: a JSON object of a readable format version, of the right structure, naming only listed
    paths inside the bundle. With ``verify`` (the default) also the manifest's digest or signature
    and every file's sha256; ``verify=False`` is for callers that have just verified the bundle.
    """
    return _read(Path(root), verify=verify, key=bundle_key() if verify else None)


def _read(root: Path, *, verify: bool, key: bytes | None, accept_unsigned: bool = False) -> Manifest:
    data = _load_json(root)
    manifest = parse(root, data)
    if verify:
        verify_digest(root, data, key, accept_unsigned=accept_unsigned)  # over the JSON exactly as read
    for _, spec in manifest.components.items():
        for rel in spec.paths():
            bundle_path(root, manifest, rel)
    if verify:
        verify_files(root, manifest)
    return manifest


def peek_task(root: Path) -> str | None:
    """The task a folder's manifest names, read without any check; None when it has no readable manifest.

    For telling bundle kinds apart before loading one (which checks everything).
    """
    try:
        data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def _load_json(root: Path) -> dict[str, Any]:
    """The manifest as a JSON object of this format and a version this slm reads."""
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
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise BundleError(
            f"{root}: bundle format version {version} is not supported "
            f"(this slm reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    return manifest


_WARNED_UNCHECKED: set[str] = set()


def verify_digest(root: Path, manifest: Mapping[str, Any], key: bytes | None, *, accept_unsigned: bool = False) -> None:
    """The manifest matches its digest; with a key configured it must be signed with that key.

    ``accept_unsigned`` (for :func:`sign_bundle`) checks an unsigned manifest even when a key is set.
    """
    recorded = manifest.get(DIGEST_KEY)
    unsigned = f"{root}: the manifest is not signed but a bundle key is configured ({KEY_ENV} or {KEY_FILE_ENV})"
    if recorded is None:  # format version 1 (schema.validate requires a digest from version 2 on)
        if key is not None and not accept_unsigned:
            raise BundleError(f"{unsigned}: sign it with slm.bundle.manifest.sign_bundle, or rebuild it")
        if str(root) not in _WARNED_UNCHECKED:  # once per bundle: a load reads the manifest more than once
            _WARNED_UNCHECKED.add(str(root))
            log.warning("%s: format version 1 bundle: its manifest (labels, settings) is not integrity-checked", root)
        return
    signed = recorded["algorithm"] == "hmac-sha256"
    if signed and key is None:
        raise BundleError(
            f"{root}: the manifest is signed (hmac-sha256) but no key is configured: "
            f"set {KEY_ENV} or {KEY_FILE_ENV} to the key it was signed with"
        )
    if not signed and key is not None and not accept_unsigned:
        raise BundleError(f"{unsigned}: sign it with slm.bundle.manifest.sign_bundle, or rebuild it")
    expected = manifest_digest(manifest, key if signed else None)["value"]
    if hmac.compare_digest(expected, recorded["value"]):
        return
    if signed:
        raise BundleError(
            f"{root}: the manifest's signature does not match: it was modified after signing, "
            "or signed with another key"
        )
    raise BundleError(f"{root} has been modified: {MANIFEST} does not match its recorded sha256 digest")


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every file listed in the manifest is inside the bundle, exists and has the recorded sha256."""
    if not manifest.files:
        raise BundleError(f"{root}: manifest lists no files")
    for rel, expected in manifest.files.items():
        file = inside_bundle(root, rel)
        if not file.is_file():
            raise BundleError(f"{root} is incomplete: {rel} is missing")
        if sha256_file(file) != expected:
            raise BundleError(f"{root} has been modified: {rel} does not match its sha256 in the manifest")


# ---------------------------------------------------------------------- paths
def inside_bundle(root: Path, rel: object) -> Path:
    """``root / rel`` resolved (symlinks followed); BundleError unless it lies inside the bundle folder."""
    root = Path(root)
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{root}: the manifest names an invalid path ({rel!r})")
    pure = PurePosixPath(rel)
    base = root.resolve()
    target = (base / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or target == base or not target.is_relative_to(base):
        raise BundleError(
            f"{root}: the manifest names a path outside the bundle folder ({rel}): "
            "a bundle may only use files inside it"
        )
    return target


def bundle_path(root: Path, manifest: Manifest, rel: object) -> Path:
    """The resolved file or folder ``rel`` inside bundle ``root``, if the manifest lists it.

    A file must be listed in ``files``; every file in a folder must be (an unlisted file beside a
    tokenizer would be read by it). Loaders open bundle files only through this, so an edited
    component path can neither reach outside the bundle nor use a file the hashes do not cover.
    """
    target = inside_bundle(root, rel)
    files = manifest.files
    key = PurePosixPath(str(rel)).as_posix()
    if target.is_dir():
        _check_folder(Path(root), key, files)
    elif key not in files:
        if not target.exists():
            raise BundleError(f"{root} is incomplete: {rel} is missing")
        raise BundleError(f"{root}: {rel} is not listed in the manifest: a bundle may only use the files it lists")
    return target


def _check_folder(root: Path, key: str, files: Mapping[str, str]) -> None:
    """Every file under ``root/key`` is listed and inside the bundle; no symlinked subfolders."""
    for folder, dirs, names in os.walk(root / key):
        for name in (*dirs, *names):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if name in dirs and not path.is_symlink():
                continue
            if rel not in files:
                raise BundleError(
                    f"{root}: {rel} is not listed in the manifest (added after the bundle was written?): "
                    "remove it or rebuild the bundle"
                )
            inside_bundle(root, rel)
