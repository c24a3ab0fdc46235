"""Exported, compressed and served bundles predict with the ensemble by default when it won on validation.

The bundle is the kept tiny one (``untrained_exported``), given the ensemble as its default the way training
ships it: its n-gram half is a real baseline fitted on BANKING77 texts, its transformer is untrained, so on
real validation texts the ensemble beats the transformer alone by far (what the default choice needs) and
a perfect transformer is beaten by nothing (what keeps the transformer).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from slm.bundle.derive import derive_bundle, drop_components
from slm.bundle.manifest import read_manifest
from slm.compression.default import choose_default
from slm.compression.export import export_bundle
from slm.compression.quantize import quantize_bundle
from slm.pipeline import DataSource
from slm.runtime import load as load_runtime
from tests.servers import running


def _with_default(source: Path, output: Path, component: str, *, keep_onnx: bool = True) -> Path:
    def change(staging: Path, manifest):
        if not keep_onnx:
            drop_components(staging, manifest, keep={"transformer", "ngram"})
        manifest.default_component = component
        return manifest

    derive_bundle(source, output, change, step="set-default")
    return output


@pytest.fixture(scope="module")
def ensemble_exported(untrained_exported, tmp_path_factory) -> Path:
    """The kept tiny exported bundle, shipping its ensemble as training does when the ensemble won."""
    return _with_default(untrained_exported, tmp_path_factory.mktemp("ens") / "tiny-onnx", "ensemble")


@pytest.fixture(scope="module")
def validation(banking_test_csv) -> tuple[DataSource, list[str]]:
    frame = pd.read_csv(banking_test_csv)
    return DataSource(banking_test_csv, "text", "category"), frame["text"].tolist()


def test_runtime_predicts_with_the_ensemble_by_default(ensemble_exported, validation) -> None:
    _, texts = validation
    model = load_runtime(ensemble_exported, threads=1)
    assert model.default_component == "ensemble" and model.backend == "onnx"
    default = model.predict_proba(texts)
    np.testing.assert_array_equal(default, model.predict_proba(texts, component="ensemble"))
    transformer = model.predict_proba(texts, component="transformer")
    assert not np.allclose(default, transformer, atol=1e-3)  # the n-gram half is there
    assert [p["label"] for p in model.predict(texts[:3], component="transformer")] == [
        model.labels[i] for i in transformer[:3].argmax(1)
    ]


def test_server_serves_the_ensemble_by_default(ensemble_exported, validation) -> None:
    _, texts = validation
    expected = load_runtime(ensemble_exported, threads=1).predict_proba(texts[:8], component="ensemble")
    with running([("tiny", ensemble_exported)]) as (url, _):
        listed = httpx.get(f"{url}/v1/models").json()["models"]
        assert listed[0]["component"] == "ensemble"
        reply = httpx.post(f"{url}/v1/models/tiny/predict", json={"texts": texts[:8], "probabilities": True})
    assert reply.status_code == 200, reply.text
    labels = listed[0]["labels"]
    got = np.array([[p["probabilities"][label] for label in labels] for p in reply.json()["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_quantized_bundle_keeps_the_ensemble_when_it_still_wins(ensemble_exported, validation, tmp_path) -> None:
    source, texts = validation
    out = tmp_path / "int8"
    manifest = quantize_bundle(ensemble_exported, out, validation=source, gate_points=100.0, fallback="fp32")
    record = (manifest.compression or {})["default_component"]
    assert manifest.default_component == "ensemble" == record["component"]
    assert record["ensemble"] > record["transformer"] and record["texts"] == len(texts)
    ensemble_gate = (manifest.metrics or {})["validation"]["ensemble"]
    assert ensemble_gate["texts"] == len(texts) and 0.0 <= ensemble_gate["candidate"] <= 1.0
    model = load_runtime(out, threads=1)
    np.testing.assert_array_equal(model.predict_proba(texts), model.predict_proba(texts, component="ensemble"))


def test_the_transformer_stays_the_default_when_the_ensemble_does_not_win(ensemble_exported, validation) -> None:
    source, texts = validation
    manifest = read_manifest(ensemble_exported)
    labels = list(manifest.labels or [])
    targets = np.array([labels.index(c) for c in pd.read_csv(source.path)["category"]])
    perfect = np.eye(len(labels), dtype=np.float32)[targets]  # a transformer no blend can beat
    choice = choose_default(ensemble_exported, manifest, texts, targets, parent=perfect, derived=perfect, step="int8")
    assert choice.component == "transformer" and choice.record["transformer"] == 1.0
    real = load_runtime(ensemble_exported, threads=1).predict_proba(texts, component="transformer")
    choice = choose_default(ensemble_exported, manifest, texts, targets, parent=real, derived=real, step="int8")
    assert choice.component == "ensemble" and choice.record["ensemble"] > choice.record["transformer"]
    shipped_transformer = read_manifest(_with_default(ensemble_exported, ensemble_exported.parent / "t", "transformer"))
    choice = choose_default(ensemble_exported, shipped_transformer, texts, targets, parent=real, derived=real, step="x")
    assert choice.component == "transformer" and choice.record == {}  # training's choice of the transformer stands


@pytest.mark.slow(reason="two ONNX exports with PyTorch and onnx: about 15 s")
def test_export_keeps_the_ensemble_default(ensemble_exported, tmp_path) -> None:
    pytorch = _with_default(ensemble_exported, tmp_path / "pytorch", "ensemble", keep_onnx=False)
    assert read_manifest(pytorch).components.onnx is None
    manifest = export_bundle(pytorch, tmp_path / "onnx", texts=["my card has not arrived", "change my pin"] * 4)
    assert manifest.default_component == "ensemble"
    assert (manifest.compression or {})["default_component"]["chosen_by"] == "training"
    transformer_only = _with_default(pytorch, tmp_path / "pytorch-t", "transformer")
    manifest = export_bundle(transformer_only, tmp_path / "onnx-t", texts=["change my pin"])
    assert manifest.default_component == "transformer"
