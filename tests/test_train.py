"""End-to-end training with the real minilm-l6 model on slices of real data."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import slm
from slm.errors import BundleError
from tests.conftest import TINY_CONFIG


def test_bundle_has_documented_layout_and_honest_report(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["format"] == "slm-bundle" and manifest["task"] == "single_label"
    assert len(manifest["labels"]) == 10
    assert manifest["base_model"]["sha256"]["model.safetensors"].startswith("53aa5117")
    for rel in manifest["files"]:
        assert (tiny_bundle / rel).is_file()
    assert not list(tiny_bundle.rglob("*.pkl")) and not list(tiny_bundle.rglob("*.pickle"))
    test_metrics = manifest["metrics"]["test"]
    assert set(test_metrics) == {"transformer", "ngram_baseline", "ensemble"}
    assert test_metrics["ensemble"]["accuracy"] > 0.5  # ten classes: chance is 0.1
    report = json.loads((tiny_bundle / "report" / "report.json").read_text())
    assert report["recommendation"]["verdict"] in {"transformer", "baseline"}
    assert (tiny_bundle / "report" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "baseline" in (tiny_bundle / "report" / "report.md").read_text().lower()
    # the checkpoint directory is cleaned up once the bundle is written
    assert not tiny_bundle.with_name(tiny_bundle.name + ".ckpt").exists()


def test_predict_round_trip_api_and_cli(tiny_bundle: Path, banking_test_csv: Path, tmp_path: Path) -> None:
    bundle = slm.load(tiny_bundle)
    frame = pd.read_csv(banking_test_csv)
    texts = frame["text"].tolist()[:40]
    predictions = bundle.predict(texts)
    proba = bundle.predict_proba(texts)
    assert proba.shape == (40, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [p["label"] for p in predictions] == [bundle.labels[i] for i in proba.argmax(1)]
    out = tmp_path / "pred.csv"
    subset = tmp_path / "in.csv"
    frame.head(40).to_csv(subset, index=False)
    run = subprocess.run(
        [sys.executable, "-m", "slm", "predict", str(tiny_bundle), str(subset), "-o", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    written = pd.read_csv(out)
    assert written["label"].tolist() == [p["label"] for p in predictions]
    assert list(written["text"]) == texts  # input columns are kept
    first = json.loads(written["probabilities"][0])
    assert abs(sum(first.values()) - 1.0) < 1e-3


def test_component_choice_changes_the_model_used(tiny_bundle: Path, banking_test_csv: Path) -> None:
    bundle = slm.load(tiny_bundle)
    texts = pd.read_csv(banking_test_csv)["text"].tolist()[:20]
    ngram = bundle.predict_proba(texts, component="ngram")
    transformer = bundle.predict_proba(texts, component="transformer")
    assert not np.allclose(ngram, transformer)
    ensemble = bundle.manifest.ensemble
    weight, shift = ensemble.transformer_weight, np.asarray(ensemble.log_prior_shift or np.zeros(10))
    expected = (weight * transformer + (1 - weight) * ngram) * np.exp(shift)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(bundle.predict_proba(texts, component="ensemble"), expected, atol=1e-5)


def test_tampered_or_incomplete_bundle_is_refused(untrained_bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(untrained_bundle, tampered)
    weights = tampered / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified"):
        slm.load(tampered)
    incomplete = tmp_path / "incomplete"
    shutil.copytree(untrained_bundle, incomplete)
    next((incomplete / "ngram").glob("*.safetensors")).unlink()
    with pytest.raises(BundleError, match="incomplete"):
        slm.load(incomplete)
    run = subprocess.run(
        [sys.executable, "-m", "slm", "predict", str(tampered), "-"],
        input='{"text": "hi"}\n',
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "modified" in run.stderr and "Traceback" not in run.stderr


def test_evaluate_reports_every_component(tiny_bundle: Path, banking_test_csv: Path, tmp_path: Path) -> None:
    report = slm.evaluate(tiny_bundle, banking_test_csv, output=tmp_path / "eval")
    assert set(report["models"]) == {"transformer", "ngram_baseline", "ensemble"}
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    # evaluating on the same test file reproduces the numbers recorded at training time
    for name, metrics in manifest["metrics"]["test"].items():
        assert report["models"][name]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert (tmp_path / "eval" / "report.html").is_file()


def _train_cmd(data: Path, out: Path, test: Path, *extra: str) -> list[str]:
    cfg = TINY_CONFIG
    return [
        sys.executable,
        "-m",
        "slm",
        "train",
        str(data),
        "-o",
        str(out),
        "--test",
        str(test),
        "--epochs",
        str(cfg["epochs"]),
        "--batch-size",
        str(cfg["batch_size"]),
        "--max-length",
        str(cfg["max_length"]),
        "--seed",
        str(cfg["seed"]),
        *extra,
    ]


def test_interrupt_mid_epoch_then_resume(
    tiny_bundle: Path, banking_csv: Path, banking_test_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    ckpt = tmp_path / "resumed.ckpt"
    proc = subprocess.Popen(
        _train_cmd(banking_csv, out, banking_test_csv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Ctrl-C once the training loop runs; the loop finishes the step in flight, so it stops mid-epoch
    deadline = time.time() + 300
    seen = ""
    while time.time() < deadline and "fine-tuning:" not in seen:
        seen += proc.stderr.readline()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, seen + err
    assert "--resume" in err
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 0 and state["next_batch"] > 0, state  # stopped mid-epoch
    assert not out.exists()  # no half-written bundle
    run = subprocess.run(
        _train_cmd(banking_csv, out, banking_test_csv, "--resume", "--quiet"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    resumed = json.loads((out / "manifest.json").read_text())
    reference = json.loads((tiny_bundle / "manifest.json").read_text())
    assert resumed["training"]["epochs_run"] == 2
    assert not ckpt.exists()
    got = resumed["metrics"]["test"]["transformer"]["accuracy"]
    want = reference["metrics"]["test"]["transformer"]["accuracy"]
    assert got >= want - 0.02, (got, want)  # same or better than the uninterrupted run
