"""Atomic file and directory writes: a crash never leaves a half-written artifact behind.

slm also never deletes what it did not write: a folder is replaced only when every file in it is listed in the
record slm keeps there (a bundle's ``manifest.json``, a prediction output's ``_manifest.json``, or
``.slm-output.json`` for any other output folder), and a temporary file is cleaned up only when the process
that made it is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from slm.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_RECORD = ".slm-output.json"  # the files slm wrote into an output folder that is not a bundle
FORCE_HELP = (
    "Write even where -o holds files slm did not write: they are moved aside to NAME.replaced-<time> "
    "(never deleted). Without it such an -o is refused."
)  # the --force option of every command with an output folder
STALE_AFTER_S = 300.0  # a temporary file or staging folder older than this, of a process that is gone, is litter


# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_file(path: Path, *, text: bool = False) -> Iterator[IO[Any]]:
    """Yield a handle on a temporary file beside ``path`` that replaces it once the block ends without error.

    For outputs written piece by piece (an export streamed in chunks): an interrupted write leaves the
    earlier file as it was. ``text``: UTF-8, newlines written as given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """UTF-8 text written atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: object) -> Path:
    """JSON (UTF-8, indented) written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _temporary_prefix(path: Path) -> str:
    """``.NAME.PID.``: hidden, tied to its target, and naming the process that may still be writing it."""
    return f".{path.name}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete what killed writes of ``path`` left beside it: ``.NAME.*.tmp`` files and ``.NAME.*.staging`` folders.

    A leftover is removed only when the process named in it is gone (or it predates the PID in the name) and it
    has not changed for :data:`STALE_AFTER_S` seconds, so a concurrent writer's file is never touched. (On a
    filesystem shared between machines, a writer on another machine is recognised by the age test alone.)
    """
    path = Path(path)
    # mkstemp/mkdtemp names: ".NAME.PID.<8 random>.tmp|.staging" (before slm recorded the PID: no "PID.")
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.(?:tmp|staging)")
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for item in path.parent.glob(f".{glob_escape(path.name)}.*"):
            match = pattern.fullmatch(item.name)
            if match is None or (match[1] and _process_alive(int(match[1]))):
                continue
            try:
                if now - item.lstat().st_mtime < STALE_AFTER_S:
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
            except OSError:
                continue
            removed.append(item)
            # debug, not info: the CLI shows info records, and this one was never shown
            log.debug("removed %s, left behind by an interrupted write", item)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


# ---------------------------------------------------------------- what slm wrote


def _record_of(folder: Path) -> set[str] | None:
    """The files slm lists as its own in ``folder`` (the record included), or None when it keeps no record there."""
    readers = {
        "manifest.json": lambda d: d.get("format") == "slm-bundle" and isinstance(d.get("files"), dict) and d["files"],
        "_manifest.json": lambda d: (
            d.get("kind") == "slm.predictions" and [s.get("file") for s in d.get("shards", []) if isinstance(s, dict)]
        ),
        OUTPUT_RECORD: lambda d: d.get("kind") == "slm-output" and d.get("files"),
    }
    for name, files_in in readers.items():
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            files = files_in(data) if isinstance(data, dict) else None
        except (OSError, ValueError, AttributeError):
            files = None
        if files:
            listed = {str(f) for f in files if isinstance(f, str)} | {name}
            if name == "manifest.json":  # bundles before format 2 did not list a nested bundle's manifest
                listed |= {f"{Path(f).parent.as_posix()}/manifest.json" for f in listed if "/" in f}
            return listed
    return None


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def foreign_files(folder: Path) -> list[str]:
    """Files in ``folder`` that slm did not write (every file, when the folder holds no slm record)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    present = _files_under(folder)
    listed = _record_of(folder)
    if listed is None:
        return present
    return [f for f in present if f not in listed]


def record_output(folder: Path, names: Iterable[str]) -> None:
    """Add ``names`` (paths relative to ``folder``) to the record of what slm wrote in an output folder."""
    folder = Path(folder)
    record = folder / OUTPUT_RECORD
    listed: set[str] = set()
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        listed = set(json.loads(record.read_text(encoding="utf-8")).get("files", []))
    files = sorted(listed | {Path(n).as_posix() for n in names})
    write_json_atomic(record, {"kind": "slm-output", "files": files})


def claim_output_folder(target: Path, *, force: bool = False) -> Path | None:
    """Make sure slm may write the folder ``target``; call it before any long work.

    A missing or empty folder, or one holding only what slm wrote there before, is fine. Any other folder is
    refused with a one-line ConfigError, or with ``force`` moved aside (never deleted) to a new
    ``NAME.replaced-<time>`` folder, whose path is returned.
    """
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConfigError(f"output {target} exists and is not a folder: choose another -o")
    foreign = foreign_files(target)
    if not foreign:
        return None
    if not force:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(
            f"output folder {target} holds files slm did not write ({foreign[0]}{more}): choose a new or empty "
            "folder, or pass --force to move that folder aside (it is kept, never deleted)"
        )
    aside = _aside(target)
    os.replace(target, aside)
    log.warning("moved %s aside to %s (--force): it held files slm did not write", target, aside)
    return aside


def claim_output_files(folder: Path, names: Iterable[str], *, force: bool = False) -> list[Path]:
    """Make sure slm may write the files ``names`` into ``folder``, which it shares with other files.

    For outputs written beside other things (a benchmark's ``NAME.json|md|png``, a tuning study): other files in
    the folder are left alone; a file of one of these names that slm did not write is refused with a one-line
    ConfigError, or with ``force`` moved aside (never deleted) to ``NAME.replaced-<time>``. Returns the moved files.
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"output {folder} exists and is not a folder: choose another -o")
    listed = _record_of(folder) or set()
    taken = [name for name in names if (folder / name).exists() and not _listed(Path(name).as_posix(), listed)]
    if taken and not force:
        raise ConfigError(
            f"output folder {folder} already holds {taken[0]}, which slm did not write: choose another folder, "
            "or pass --force to move that file aside (it is kept, never deleted)"
        )
    moved = []
    for name in taken:
        aside = _aside(folder / name)
        os.replace(folder / name, aside)
        log.warning("moved %s aside to %s (--force): slm did not write it", folder / name, aside)
        moved.append(aside)
    return moved


def _listed(name: str, listed: set[str]) -> bool:
    """Whether the file or folder ``name`` is in the record (a folder: every file in it is)."""
    return name in listed or any(f.startswith(f"{name}/") for f in listed)


def _aside(path: Path) -> Path:
    """A new name beside ``path`` for what ``--force`` moves out of the way: ``NAME.replaced-<time>[-N]``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    return aside


def remove_output_folder(folder: Path) -> bool:
    """Delete a folder slm wrote and no longer needs (a finished run's checkpoints); True when it went.

    A folder holding anything slm did not write is left where it is, with a warning.
    """
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    foreign = foreign_files(folder)
    if foreign:
        log.warning("left %s in place: it holds files slm did not write (%s)", folder, foreign[0])
        return False
    shutil.rmtree(folder)
    return True


# ---------------------------------------------------------------- atomic folders


@contextlib.contextmanager
def atomic_directory(target: Path, *, nested: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory; on success it replaces ``target`` in one step.

    On any error (or Ctrl-C) the staging directory is removed and an existing ``target`` is left
    untouched, so the previous good artifact survives. A folder holding files slm did not write is never
    replaced (ConfigError; commands check with :func:`claim_output_folder` before they start). The new
    folder keeps a record of its files unless it has one already (a bundle's manifest). ``nested`` is for a
    part written inside a folder that is itself being staged: no record, no check.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not nested:
        remove_stale_temporaries(target)
        claim_output_folder(target)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".staging", dir=target.parent))
    try:
        yield staging
        if not nested and _record_of(staging) is None:
            record_output(staging, _files_under(staging))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_directory(staging, target, check=not nested)


def replace_directory(source: Path, target: Path, *, check: bool = True) -> None:
    """Move ``source`` to ``target``, swapping out an existing ``target`` with two renames.

    With ``check``, a ``target`` holding files slm did not write is refused (ConfigError) and left as it is.
    """
    if target.exists():
        if check:
            try:
                claim_output_folder(target)
            except ConfigError:
                shutil.rmtree(source, ignore_errors=True)
                raise
        old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".staging", dir=target.parent))
        os.replace(target, old)  # onto the fresh empty folder: rename(2) replaces an empty directory
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from ``path``; BundleError naming ``what`` when it is missing, corrupt or not an object."""
    from slm.errors import BundleError

    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{what} file {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"{what} file {path} is corrupt (not valid JSON)") from None
    if not isinstance(data, dict):
        raise BundleError(f"{what} file {path} does not hold a JSON object")
    return data
