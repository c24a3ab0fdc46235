"""``slm predict --engine ray``: Ray Data batch prediction on a local Ray cluster, with the real exported bundle.

Every job runs the real CLI in a subprocess, which starts its own local Ray. One test kills a
prediction actor mid-job and checks that the output still holds every input row exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from slm.runtime import load as load_runtime
from slm.runtime.ray_predict import MANIFEST, _sha256
from tests.conftest import banking_frame
from tests.test_cli import _env, assert_one_line_error, slm

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

BUSY_CPU_SECONDS = 4.0  # an actor's start-up (imports, model load) takes about 2 CPU-seconds here
ACTOR = "MapWorker(MapBatches(Predictor)"  # "...Predictor)->Write)" when Ray fuses the shard write in


def _rows(n: int) -> pd.DataFrame:
    """``n`` rows of real BANKING77 test texts (repeated), each with a unique id."""
    texts = banking_frame("test", per_class=12)["text"].tolist()
    return pd.DataFrame({"id": range(n), "text": [texts[i % len(texts)] for i in range(n)]})


def _actors() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if ACTOR in cmdline:
            found.append(proc)
    return found


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _check_manifest(folder: Path, rows: int, fmt: str) -> dict:
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "slm.predictions" and manifest["rows"] == rows and manifest["format"] == fmt
    files = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert files == [s["file"] for s in manifest["shards"]]  # nothing but the listed shards
    for shard in manifest["shards"]:
        assert _sha256(folder / shard["file"]) == shard["sha256"]
    assert sum(s["rows"] for s in manifest["shards"]) == rows
    return manifest


def test_every_row_exactly_once_when_a_worker_is_killed(exported, tmp_path) -> None:
    n = 8_000
    source = tmp_path / "texts.csv"
    _rows(n).to_csv(source, index=False)
    out = tmp_path / "labelled"
    job = subprocess.Popen(
        [sys.executable, "-m", "slm", "predict", str(exported), str(source), "-o", str(out), "--engine", "ray",
         "--actors", "2", "--batch-size", "64", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    killed, written_at_kill, deadline = None, 0, time.monotonic() + 240
    try:
        while killed is None and job.poll() is None and time.monotonic() < deadline:
            staging = [p for p in tmp_path.glob(".labelled.*.staging") if p.is_dir()]
            written = [f for f in staging[0].iterdir() if f.is_file()] if staging else []
            busy = [a for a in _actors() if _cpu_seconds(a) >= BUSY_CPU_SECONDS]
            if busy:  # a predictor past its start-up, labelling: kill it mid-job
                written_at_kill = len(written)
                killed = busy[0].pid
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        _, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert killed is not None, f"the job ended before a worker could be killed: {stderr}"
    assert job.returncode == 0, stderr
    assert "Traceback" not in stderr

    manifest = _check_manifest(out, n, "parquet")
    assert written_at_kill < len(manifest["shards"]), "the kill came after the last shard was written"
    table = pq.read_table(out)  # the folder reads as one table: the manifest's "_" keeps readers off it
    ids = table.column("id").to_pylist()
    assert len(ids) == n and sorted(ids) == list(range(n)) and ids == sorted(ids)  # once each, in input order
    frame = table.to_pandas()
    sample = frame.drop_duplicates("text").head(40)
    reference = load_runtime(exported, threads=1)
    expected = reference.predict(sample["text"].tolist())
    assert sample["label"].tolist() == [r["label"] for r in expected]
    for row, want in zip(sample.itertuples(), expected, strict=True):
        assert abs(row.score - want["score"]) < 1e-4
        assert set(row.probabilities) == set(reference.labels)


def test_folder_of_jsonl_shards_replaces_an_earlier_output(exported, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rows = _rows(300)
    rows["label"] = "unknown"  # an existing label column: predictions go to predicted_*
    for i, part in enumerate((rows.iloc[:120], rows.iloc[120:])):
        part.to_json(folder / f"part-{i}.jsonl", orient="records", lines=True)
    out = tmp_path / "labelled.jsonl"  # the suffix sets the shard format
    for _ in range(2):  # the second run replaces the first one's folder
        done = slm("predict", exported, folder, "-o", out, "--engine", "ray", "--batch-size", "50")
        assert done.returncode == 0, done.stderr
        assert "Wrote 300 predictions" in done.stderr
    manifest = _check_manifest(out, 300, "jsonl")
    assert manifest["input"]["files"] == ["part-0.jsonl", "part-1.jsonl"] and manifest["input"]["text_col"] == "text"
    assert manifest["columns"]["label"] == "predicted_label"
    lines = [json.loads(line) for s in manifest["shards"] for line in (out / s["file"]).read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(300))
    reference = load_runtime(exported, threads=1)
    first = reference.predict([lines[0]["text"]])[0]
    assert lines[0]["predicted_label"] == first["label"] and lines[0]["label"] == "unknown"
    assert lines[0]["predicted_probabilities"].keys() == set(reference.labels)


def test_bad_ray_jobs_are_refused_in_one_line(untrained_exported, untrained_bundle, tmp_path) -> None:
    source = tmp_path / "texts.csv"
    _rows(20).to_csv(source, index=False)
    assert_one_line_error(slm("predict", untrained_exported, source, "--engine", "ray"), "pass -o FOLDER")
    assert_one_line_error(slm("predict", untrained_exported, "-", "-o", tmp_path / "o", "--engine", "ray"), "not stdin")
    assert_one_line_error(slm("predict", untrained_exported, source, "--address", "auto"), "--engine ray only")
    assert_one_line_error(
        slm("predict", untrained_bundle, source, "-o", tmp_path / "o", "--engine", "ray"), "slm export"
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _rows(5).to_csv(mixed / "a.csv", index=False)
    _rows(5).to_json(mixed / "b.jsonl", orient="records", lines=True)
    assert_one_line_error(
        slm("predict", untrained_exported, mixed, "-o", tmp_path / "o", "--engine", "ray"), "mixes formats"
    )
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert_one_line_error(
        slm("predict", untrained_exported, source, "-o", keep, "--engine", "ray"), "slm did not write"
    )
    assert (keep / "notes.txt").read_text() == "mine"
