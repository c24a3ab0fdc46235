"""Output folders: slm never deletes what it did not write (issue 21, defects 2 and 8).

Every command that writes a folder refuses one holding files slm did not write, before any long work, in one
line with exit code 2; ``--force`` moves such a folder aside instead of deleting it. A killed atomic write's
leftovers are cleaned on the next write, but never a concurrent writer's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slm import fileio
from slm.errors import ConfigError
from tests.test_cli import slm


def _user_folder(path: Path) -> Path:
    """A folder of the user's own: the review's reproduction (``important.txt`` and ``sub/notes.md``)."""
    (path / "sub").mkdir(parents=True)
    (path / "important.txt").write_text("do not lose me\n", encoding="utf-8")
    (path / "sub" / "notes.md").write_text("# notes\n", encoding="utf-8")
    return path


def _intact(path: Path) -> bool:
    return (path / "important.txt").read_text(encoding="utf-8") == "do not lose me\n" and (
        path / "sub" / "notes.md"
    ).is_file()


def _one_line_refusal(result, folder: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(folder) in lines[0] and "--force" in lines[0] and "Traceback" not in result.stderr


def test_export_refuses_a_folder_of_the_users(tiny_bundle, tmp_path):
    target = _user_folder(tmp_path / "mine")
    result = slm("export", tiny_bundle, "-o", target)
    _one_line_refusal(result, target)
    assert _intact(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging or leftovers beside it


def test_compress_refuses_a_folder_of_the_users_before_any_work(untrained_exported, tmp_path):
    target = _user_folder(tmp_path / "mine")
    started = time.monotonic()
    result = slm("compress", untrained_exported, "--quantize", "int8", "-o", target)
    _one_line_refusal(result, target)
    assert _intact(target)
    assert time.monotonic() - started < 60  # refused up front, not after quantizing and gating


@pytest.mark.parametrize("command", ["train", "evaluate", "tune"])
def test_training_commands_refuse_a_folder_of_the_users(command, tiny_bundle, banking_csv, tmp_path):
    target = _user_folder(tmp_path / "mine")
    args = {"train": [banking_csv], "evaluate": [tiny_bundle, banking_csv], "tune": [banking_csv]}[command]
    (target / "study.db").write_bytes(b"my own database")  # tune shares its folder, but never a file of its names
    result = slm(command, *args, "-o", target)
    _one_line_refusal(result, target)
    assert _intact(target) and (target / "study.db").read_bytes() == b"my own database"


def test_force_moves_the_folder_aside_and_never_deletes_it(tiny_bundle, tmp_path):
    target = _user_folder(tmp_path / "mine")
    result = slm("export", tiny_bundle, "-o", target, "--force")
    assert result.returncode == 0, result.stderr
    assert (target / "manifest.json").is_file() and not (target / "important.txt").exists()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("mine.replaced-")]
    assert len(moved) == 1 and _intact(moved[0])


def test_a_bundle_slm_wrote_is_replaced_but_not_one_the_user_added_to(tiny_bundle, tmp_path):
    target = tmp_path / "onnx"
    assert slm("export", tiny_bundle, "-o", target).returncode == 0
    first = (target / "manifest.json").read_text(encoding="utf-8")
    again = slm("export", tiny_bundle, "-o", target)
    assert again.returncode == 0, again.stderr  # an earlier slm bundle is slm's own: replaced
    assert (target / "manifest.json").read_text(encoding="utf-8") != first  # a new "created" time at least
    (target / "my-notes.md").write_text("mine\n", encoding="utf-8")
    refused = slm("export", tiny_bundle, "-o", target)
    _one_line_refusal(refused, target)
    assert (target / "my-notes.md").is_file()


def test_derived_bundles_copy_only_the_parents_verified_files(untrained_exported, tmp_path):
    from slm.bundle.derive import derive_bundle

    parent = tmp_path / "parent"
    import shutil

    shutil.copytree(untrained_exported, parent)
    (parent / "stray.bin").write_bytes(b"not part of the bundle")
    manifest = derive_bundle(parent, tmp_path / "child", lambda staging, m: m, step="copy")
    assert "stray.bin" not in manifest.files and not (tmp_path / "child" / "stray.bin").exists()


def test_atomic_directory_never_replaces_a_foreign_folder(tmp_path):
    target = _user_folder(tmp_path / "mine")
    with pytest.raises(ConfigError, match="slm did not write"), fileio.atomic_directory(target) as staging:
        (staging / "new.txt").write_text("x", encoding="utf-8")
    assert _intact(target)
    assert fileio.foreign_files(target) == ["important.txt", "sub/notes.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # A folder slm wrote (it keeps a record of its files) is replaced as a whole.
    with fileio.atomic_directory(tmp_path / "ours") as staging:
        (staging / "a.txt").write_text("1", encoding="utf-8")
    with fileio.atomic_directory(tmp_path / "ours") as staging:
        (staging / "b.txt").write_text("2", encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [".slm-output.json", "b.txt"]


def test_shared_output_folders_refuse_only_files_of_their_own_names(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "other.md").write_text("someone else's\n", encoding="utf-8")
    fileio.claim_output_files(folder, ["benchmark.json"])  # other files are left alone: fine
    (folder / "benchmark.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="benchmark.json, which slm did not write"):
        fileio.claim_output_files(folder, ["benchmark.json"])
    moved = fileio.claim_output_files(folder, ["benchmark.json"], force=True)
    assert len(moved) == 1 and moved[0].read_text(encoding="utf-8") == "{}"


def _leftover(folder: Path, target: str, pid: int | None, age_s: float, tag: str = "abcd_123") -> Path:
    middle = f"{pid}." if pid is not None else ""
    path = folder / f".{target}.{middle}{tag}.tmp"  # tag: mkstemp's 8 random characters
    path.write_bytes(b"x" * 1024)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def _dead_pid() -> int:
    pid = 4_000_000  # above Linux's pid_max default: no such process
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_killed_writes_leftover_is_cleaned_on_the_next_write(tmp_path):
    stale = _leftover(tmp_path, "report.json", _dead_pid(), fileio.STALE_AFTER_S + 60)
    legacy = _leftover(tmp_path, "report.json", None, fileio.STALE_AFTER_S + 60)  # named before slm recorded the PID
    fresh = _leftover(
        tmp_path, "report.json", _dead_pid(), 5, tag="efgh_456"
    )  # may belong to a writer on another machine
    live = _leftover(tmp_path, "report.json", os.getpid(), fileio.STALE_AFTER_S + 60)  # a writer still running
    other = _leftover(tmp_path, "report.json.bak", _dead_pid(), fileio.STALE_AFTER_S + 60)  # another file's
    fileio.write_json_atomic(tmp_path / "report.json", {"ok": True})
    assert not stale.exists() and not legacy.exists()
    assert fresh.exists() and live.exists() and other.exists()
    fileio.write_text_atomic(tmp_path / "report.json.bak", "x")
    assert not other.exists()


def test_a_killed_staging_folder_is_cleaned_on_the_next_folder_write(tmp_path):
    stale = tmp_path / f".bundle.{_dead_pid()}.abcd_123.staging"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "weights.bin").write_bytes(b"x" * 4096)
    old = time.time() - fileio.STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    with fileio.atomic_directory(tmp_path / "bundle") as staging:
        (staging / "a.txt").write_text("1", encoding="utf-8")
    assert not stale.exists()
