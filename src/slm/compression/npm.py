"""The JavaScript a web export vendors: fetched by npm once, at export time, into slm's cache.

``web_template/package.json`` pins exact versions and ``web_template/package-lock.json`` records each package's
sha512 integrity (and no registry address: npm uses the one it is configured with). ``npm ci`` installs exactly
that lock and refuses a download whose hash differs. The result is kept in ``$SLM_CACHE/web-runtime/<lock hash>``
(``~/.cache/slm`` without SLM_CACHE), built under a temporary name and renamed when complete, so an interrupted
install is never mistaken for a finished one. Only a few of its files are copied into an export; nothing of it
goes into slm's own repository or package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from slm.errors import ConfigError, one_line

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("web_template")
LOCK_FILES = ("package.json", "package-lock.json")
MARKER = ".slm-runtime.json"
INSTALL = "apt-get install nodejs npm"
NPM_TIMEOUT_S = 900


def pinned_versions() -> dict[str, str]:
    """The npm packages a web export vendors, with their exact versions (from web_template/package.json)."""
    data = json.loads((TEMPLATE / "package.json").read_text(encoding="utf-8"))
    return dict(data["dependencies"])


def lock_digest() -> str:
    """sha256 of the pinned package.json and lock: a new pin gets a new cache folder."""
    digest = hashlib.sha256()
    for name in LOCK_FILES:
        digest.update((TEMPLATE / name).read_bytes())
    return digest.hexdigest()


def default_cache() -> Path:
    """``$SLM_CACHE/web-runtime``, else ``~/.cache/slm/web-runtime``."""
    from slm.models.registry import cache_dir

    return cache_dir() / "web-runtime"


def require_tool(name: str) -> str:
    """The path of ``node`` or ``npm``; a one-line ConfigError naming the install command when it is missing."""
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"{name} is not installed: --target web fetches onnxruntime-web and the tokenizer with npm and checks "
            f"the page with node (Debian/Ubuntu: {INSTALL}; elsewhere: install Node.js, which ships npm)"
        )
    return found


def ensure_runtime(cache: str | Path | None = None) -> Path:
    """The ``node_modules`` folder holding the pinned packages, installed with ``npm ci`` on first use.

    ``cache`` is the parent folder of the installs (default: :func:`default_cache`).
    """
    digest = lock_digest()
    folder = Path(cache).expanduser() if cache is not None else default_cache()
    home = folder / digest[:16]
    if _complete(home, digest):
        return home / "node_modules"
    npm = require_tool("npm")
    require_tool("node")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", suffix=".partial", dir=folder))
    try:
        for name in LOCK_FILES:
            shutil.copyfile(TEMPLATE / name, staging / name)
        versions = ", ".join(f"{name}@{version}" for name, version in pinned_versions().items())
        log.info(f"fetching {versions} with npm into {home} (once)")
        _npm_ci(npm, staging)
        (staging / MARKER).write_text(json.dumps({"lock_sha256": digest, "packages": pinned_versions()}), "utf-8")
        if home.exists() and not _complete(home, digest):
            shutil.rmtree(home)  # a damaged install of slm's own (e.g. node_modules deleted by hand)
        try:
            os.replace(staging, home)
        except OSError:  # another export finished the same install first: use that one
            if not _complete(home, digest):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home / "node_modules"


def _complete(home: Path, digest: str) -> bool:
    try:
        marker = json.loads((home / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("lock_sha256") == digest and (home / "node_modules").is_dir()


def _npm_ci(npm: str, folder: Path) -> None:
    """``npm ci`` in ``folder``: exactly the lock's versions, integrity-checked; no install scripts run."""
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
    try:
        done = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"npm ci did not finish in {NPM_TIMEOUT_S} s: check the network and npm's registry "
            "(npm config get registry)"
        ) from None
    if done.returncode != 0:
        raise ConfigError(
            f"npm could not fetch the web runtime ({_npm_error(done.stderr or done.stdout)}): check the network "
            "and npm's registry (npm config get registry)"
        )


def _npm_error(output: str) -> str:
    """The most telling line of npm's error output (its code and summary), cut short."""
    lines = [line.removeprefix("npm error").removeprefix("npm ERR!").strip() for line in output.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("A complete log", "/", "syscall ", "errno "))]
    coded = [line for line in lines if line.startswith("code ")]
    rest = [line for line in lines if not line.startswith("code ")]
    telling = [line for line in rest if "reason:" in line or "Error" in line] or rest
    return one_line("; ".join(coded[:1] + telling[:1]) or "no message")[:300]
