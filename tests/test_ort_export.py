"""`slm export --target ort`: ONNX Runtime's mobile format, checked against the ONNX bundle it came from.

Runs on the kept tiny bundle (tests/fixtures/tiny-bundle: MiniLM's tokenizer, a 2-layer fused graph) and
real BANKING77 texts; the int8 case quantizes that graph with slm's own int8 recipe first.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from slm.bundle.derive import derive_bundle
from slm.bundle.manifest import read_manifest
from slm.compression.ort_format import export_ort_bundle
from slm.compression.quantize import QuantRecipe, quantize_graph
from slm.runtime.onnx import OnnxComponent, load_tokenizer
from tests.conftest import banking_frame
from tests.test_cli import assert_one_line_error, slm

TEXTS = banking_frame("test", per_class=3, seed=1)["text"].tolist()


def _raw_outputs(model: Path, tokenizer_dir: Path, texts: list[str]) -> np.ndarray:
    """The model's logits from a bare onnxruntime session (what a mobile app's ORT session computes)."""
    tokenizer = load_tokenizer(tokenizer_dir, 48)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        rows.append(session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def int8_bundle(untrained_exported, tmp_path_factory) -> Path:
    """The tiny bundle with its graph quantized by slm's default int8 recipe (weights and embeddings)."""
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    spec = read_manifest(untrained_exported).components.onnx

    def change(staging: Path, manifest):
        quantize_graph(untrained_exported / spec.file, staging / spec.file, QuantRecipe("s8-per-channel"))
        manifest.components.onnx = replace(spec, precision="int8")
        return manifest

    derive_bundle(untrained_exported, out, change, step="quantize")
    return out


@pytest.mark.parametrize("source", ["untrained_exported", "int8_bundle"])
def test_ort_file_loads_in_onnxruntime_and_matches_the_onnx_model(source, request, tmp_path):
    bundle = request.getfixturevalue(source)
    manifest = export_ort_bundle(bundle, tmp_path / "ort", texts=TEXTS)
    spec = manifest.components.onnx
    assert spec.file == "onnx/model.ort" and spec.parity["max_abs_diff"] <= 1e-5
    assert spec.precision == read_manifest(bundle).components.onnx.precision
    onnx_out = _raw_outputs(bundle / "onnx/model.onnx", bundle / "tokenizer", TEXTS)
    ort_out = _raw_outputs(tmp_path / "ort/onnx/model.ort", tmp_path / "ort/tokenizer", TEXTS)
    assert np.abs(onnx_out - ort_out).max() <= 1e-5
    # the same through slm's runtime, in padded batches (dynamic int8 scales each batch: compare like with like)
    from_ort = OnnxComponent(tmp_path / "ort", spec).logits(TEXTS, batch_size=8)
    from_onnx = OnnxComponent(bundle, read_manifest(bundle).components.onnx).logits(TEXTS, batch_size=8)
    assert np.abs(from_ort - from_onnx).max() <= 1e-5


def test_ort_bundle_ships_the_model_tokenizer_and_operator_config_only(int8_bundle, tmp_path):
    manifest = export_ort_bundle(int8_bundle, tmp_path / "ort", texts=TEXTS)
    read_manifest(tmp_path / "ort")  # verifies every file hash
    assert sorted(manifest.files) == [
        "onnx/model.ort",
        "onnx/model.required_operators_and_types.config",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
    ]
    assert manifest.components.names() == ["onnx"]
    assert manifest.lineage[-1].step == "export-ort"
    config = (tmp_path / "ort/onnx/model.required_operators_and_types.config").read_text()
    # a reduced build compiled from this list must hold the int8 kernels and the fused contrib operators
    assert "DynamicQuantizeLinear" in config or "DynamicQuantizeMatMul" in config, config
    assert "com.microsoft" in config and "Attention" in config, config
    record = manifest.compression["ort_format"]
    assert record["ort_mb"] > 0 and record["onnx_mb"] > 0 and record["onnxruntime"] == ort.__version__


def test_cli_writes_the_ort_bundle_and_it_predicts(untrained_exported, tmp_path, banking_test_csv):
    out = tmp_path / "mobile"
    proc = slm("export", untrained_exported, "--target", "ort", "-o", out, "--data", banking_test_csv)
    assert proc.returncode == 0, proc.stderr
    assert "ORT-format bundle written" in proc.stdout and "required_operators" in proc.stdout
    predicted = slm("predict", out, "-", stdin='{"text": "I still have not received my new card"}\n')
    assert predicted.returncode == 0, predicted.stderr
    assert '"label"' in predicted.stdout


def test_cli_refuses_a_pytorch_only_bundle_and_an_ort_bundle_in_one_line(
    untrained_bundle, untrained_exported, tmp_path
):
    refused = slm("export", untrained_bundle, "--target", "ort", "-o", tmp_path / "x")
    assert_one_line_error(refused, "run 'slm export", code=4)
    assert not (tmp_path / "x").exists()
    first = tmp_path / "first"
    export_ort_bundle(untrained_exported, first, texts=TEXTS)
    assert_one_line_error(slm("export", first, "--target", "ort", "-o", tmp_path / "y"), "already in ORT format")
    assert not (tmp_path / "y").exists()
