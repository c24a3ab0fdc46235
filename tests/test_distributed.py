"""Distributed data-parallel training: a real 2-process job (PyTorch DDP over gloo) on a BANKING77 slice.

Accuracy against one process on the whole of BANKING77 is measured by ``bench/distributed.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import banking_frame
from tests.test_cli import _env, slm

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "slice.csv"
    banking_frame("train", per_class=20).to_csv(path, index=False)
    return path


@pytest.mark.slow(reason="trains a model: two processes under torchrun")
def test_two_process_job_trains_and_rank_zero_writes_one_bundle(tmp_path, slice_csv):
    test_csv = tmp_path / "test.csv"
    banking_frame("test", per_class=10).to_csv(test_csv, index=False)
    out = tmp_path / "model"
    done = slm("train", slice_csv, "--test", test_csv, "-o", out, "--nproc", "2", "--epochs", "2", "--max-length", "32",
               "--method", "full", "--no-ensemble")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["training"]
    assert training["distributed"] == {"world_size": 2, "backend": "gloo", "nodes": 1}
    assert training["threads"] == 1  # each of the two ranks takes one of the two cores
    assert training["epochs_run"] == 2
    # Every rank saw its share of each global batch: the examples counted are the whole split, twice.
    n_train = manifest["data"]["n_train"]
    assert round(training["examples_per_s"] * training["train_seconds"]) == pytest.approx(2 * n_train, rel=0.03)
    assert manifest["metrics"]["test"]["transformer"]["accuracy"] > 0.6  # 10 intents: chance is 0.1
    assert not (tmp_path / "model.ckpt").exists()  # the single writer's checkpoints are gone after success
    assert done.stderr.count("fine-tuning:") == 1  # only rank 0 talks


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            ["--nproc", "2", "--method", "fewshot"],
            "--nproc trains with --method full, lora, adalora, not fewshot",
            marks=pytest.mark.slow(reason="trains a model: the n-gram baseline, before the method check"),
        ),
        (["--nnodes", "2"], "--nnodes > 1 needs --rdzv-endpoint HOST:PORT"),
    ],
)
def test_distributed_options_refused_in_one_line(tmp_path, slice_csv, extra, message):
    done = slm("train", slice_csv, "-o", tmp_path / "model", "--epochs", "1", *extra)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.slow(reason="trains a model: two processes under torchrun")
def test_interrupted_two_process_lora_job_resumes(tmp_path, slice_csv):
    """Ctrl-C stops both ranks after rank 0's checkpoint; ``--resume --nproc 2`` finishes the job."""
    out, ckpt = tmp_path / "model", tmp_path / "model.ckpt"
    args = [sys.executable, "-m", "slm", "train", str(slice_csv), "-o", str(out), "--nproc", "2", "--epochs", "2",
            "--max-length", "32", "--method", "lora", "--no-ensemble", "--batch-size", "8"]  # fmt: skip
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                           start_new_session=True)  # fmt: skip
    seen, deadline = "", time.monotonic() + 300
    while time.monotonic() < deadline and "fine-tuning:" not in seen:
        line = job.stderr.readline()
        if not line:
            break
        seen += line
    time.sleep(1.0)
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the launcher and both ranks get it
    _, rest = job.communicate(timeout=240)
    assert job.returncode == 130, seen + rest
    assert "--resume" in rest and not out.exists()
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 0 and state["next_batch"] > 0, state  # stopped mid-epoch, one writer's checkpoint
    done = subprocess.run([*args, "--resume", "--quiet"], capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["training"]
    assert training["distributed"]["world_size"] == 2 and training["method"] == "lora"
    assert training["epochs_run"] == 2 and not ckpt.exists()
