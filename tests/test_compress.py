"""ONNX export, int8 quantization and the accuracy gate, on the real tiny BANKING77 bundle."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import slm
from slm.bundle.manifest import read_manifest
from slm.cli import app
from slm.compression.export import export_bundle
from slm.compression.gate import GateRejected, enforce, measure
from slm.compression.quantize import quantize_bundle
from slm.errors import BundleError, ConfigError, DataError
from slm.models.ensemble import probabilities
from slm.pipeline import DataSource, recorded_validation
from slm.runtime.onnx import OnnxComponent
from tests.conftest import DATA, require

runner = CliRunner()


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    quantize_bundle(exported, out, gate_points=5.0)
    return out


def _test_rows(banking_test_csv: Path) -> tuple[list[str], list[str]]:
    frame = pd.read_csv(banking_test_csv)
    return frame["text"].tolist(), frame["category"].tolist()


def test_export_is_fused_and_matches_pytorch(tiny_bundle, exported, banking_test_csv) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    spec = manifest["components"]["onnx"]
    assert spec["opset"] >= 17 and spec["precision"] == "fp32"
    assert spec["fused_operators"].get("Attention") == 6  # every layer's attention fused by ORT's optimizer
    assert spec["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["lineage"][-1]["step"] == "export"
    texts, _ = _test_rows(banking_test_csv)
    torch_proba = slm.load(tiny_bundle).predict_proba(texts, component="transformer")
    onnx_model = slm.load(exported)
    assert onnx_model.backend == "onnx"
    np.testing.assert_allclose(onnx_model.predict_proba(texts, component="transformer"), torch_proba, atol=1e-4)
    # Batch composition must not matter: dynamic axes, padding masked out.
    single = np.vstack([onnx_model.predict_proba([t], component="transformer") for t in texts[:5]])
    np.testing.assert_allclose(single, torch_proba[:5], atol=1e-4)


def test_export_fails_loudly_when_parity_breaks(tiny_bundle, tmp_path) -> None:
    with pytest.raises(slm.errors.ModelError, match="parity"):
        export_bundle(tiny_bundle, tmp_path / "out", tolerance=0.0)  # no float pipeline is bit-exact
    assert not (tmp_path / "out").exists()


def test_int8_bundle_is_smaller_accurate_and_recorded(exported, quantized, banking_test_csv) -> None:
    manifest = json.loads((quantized / "manifest.json").read_text())
    quantization = manifest["compression"]["quantization"]
    assert manifest["components"]["onnx"]["precision"] == "int8"
    assert "transformer" not in manifest["components"]  # PyTorch weights stay with the parent
    assert not (quantized / "model").exists()
    assert quantization["validation"]["drop_points"] <= 5.0
    assert any(t["verdict"] == "shipped" for t in quantization["tried"])
    fp32_size = (exported / "model" / "model.safetensors").stat().st_size
    assert (quantized / "onnx" / "model.onnx").stat().st_size <= 0.25 * fp32_size
    texts, labels = _test_rows(banking_test_csv)
    fp32 = slm.load(exported).predict_proba(texts, component="transformer")
    int8 = slm.load(quantized).predict_proba(texts, component="transformer")
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9
    names = slm.load(quantized).labels
    accuracy = np.mean([names[i] == y for i, y in zip(int8.argmax(1), labels, strict=True)])
    assert accuracy > 0.6  # 10 classes: chance is 0.1


def test_gate_rejects_a_broken_variant(exported, quantized, tmp_path) -> None:
    """Shuffle the int8 model's matrix weights: the gate must refuse it in one line."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(quantized / "onnx" / "model.onnx")
    rng = np.random.default_rng(0)
    shuffled = 0
    for tensor in model.graph.initializer:
        weights = numpy_helper.to_array(tensor)
        if weights.ndim == 2 and weights.dtype in (np.int8, np.uint8) and min(weights.shape) > 1:
            broken = rng.permutation(weights.reshape(-1)).reshape(weights.shape)
            tensor.CopyFrom(numpy_helper.from_array(broken, tensor.name))
            shuffled += 1
    assert shuffled >= 6
    onnx.save(model, tmp_path / "broken.onnx")

    manifest = read_manifest(exported)
    evaluation = recorded_validation(manifest)
    targets = evaluation.targets(manifest.labels)
    spec = manifest.components.onnx
    reference = probabilities(OnnxComponent(exported, spec).logits(evaluation.texts), False)
    candidate = probabilities(
        OnnxComponent(exported, replace(spec, file=str(tmp_path / "broken.onnx"))).logits(evaluation.texts), False
    )
    result = measure(reference, candidate, targets, "single_label")
    assert result.drop_points > 1.0
    with pytest.raises(GateRejected, match="rejected by the accuracy gate") as caught:
        enforce(result, 1.0, "broken-int8")
    assert "\n" not in str(caught.value)
    enforce(measure(reference, reference, targets, "single_label"), 0.0, "fp32 itself")  # a no-op variant passes


def test_quantize_errors(exported, quantized, tmp_path, banking_csv) -> None:
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_bundle(quantized, tmp_path / "again")
    with pytest.raises(ConfigError, match="mode"):
        quantize_bundle(exported, tmp_path / "x", mode="int3")
    with pytest.raises(ConfigError, match="gate"):
        quantize_bundle(exported, tmp_path / "x", gate_points=-1)
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"text": ["where is my card", "hello"], "category": ["card_arrival", "not_a_label"]}).to_csv(
        unknown, index=False
    )
    with pytest.raises(BundleError):
        quantize_bundle(tmp_path / "missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "marker").write_text("previous good bundle")
    with pytest.raises(DataError):
        quantize_bundle(exported, kept, validation=DataSource(unknown))
    assert (kept / "marker").read_text() == "previous good bundle"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kept")]  # no staging left behind


def test_cli_compress_then_predict_round_trip(tiny_bundle, exported, banking_test_csv, tmp_path) -> None:
    """PyTorch bundle -> `slm compress --quantize int8` (exports on the way) -> `slm predict`."""
    target = tmp_path / "cli-int8"
    result = runner.invoke(app, ["compress", str(tiny_bundle), "-o", str(target), "--quantize", "int8", "--gate", "5"])
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "agreement" in result.output
    out_csv = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(target), str(banking_test_csv), "-o", str(out_csv), "-q"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(out_csv)
    texts, _ = _test_rows(banking_test_csv)
    reference = slm.load(exported).predict(texts)
    agreement = np.mean([a == b["label"] for a, b in zip(predicted["label"], reference, strict=True)])
    assert agreement >= 0.9


def test_cli_compress_bad_input_is_one_line(untrained_bundle, tmp_path) -> None:
    result = runner.invoke(app, ["compress", str(untrained_bundle), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing to do" in result.output
    result = runner.invoke(app, ["compress", str(tmp_path / "nope"), "--quantize", "int8"])
    assert result.exit_code == 4 and result.output.count("\n") == 1, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert result.exit_code == 4 and result.output.startswith("error:"), result.output


def test_unreachable_vocabulary_is_trimmed_without_changing_tokenization(exported, quantized, banking_test_csv) -> None:
    from tokenizers import Tokenizer

    from slm.compression.vocabulary import trim_tokenizer, unreachable_ids

    raw = json.loads((exported / "tokenizer" / "tokenizer.json").read_text())
    drop = unreachable_ids(raw)
    vocab = raw["model"]["vocab"]
    names = {i: t for t, i in vocab.items()}
    assert "[unused0]" in {names[i] for i in drop} and vocab["[CLS]"] not in drop and vocab["."] not in drop
    trimmed, keep = trim_tokenizer(raw, drop)
    old, new = Tokenizer.from_str(json.dumps(raw)), Tokenizer.from_str(json.dumps(trimmed))
    for tok in (old, new):
        tok.no_padding()
    texts, _ = _test_rows(banking_test_csv)
    waimai = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"))["review"].head(200).tolist()
    tricky = ["[unused0] [UNK] [CLS] ##. ##, e.g. U.S.A.!!", "价格：¥12.5（含税）…好吃！", "Ünïcödé ﬁ — “quotes”"]
    for text in [*texts, *waimai, *tricky]:
        assert keep[new.encode(text).ids].tolist() == old.encode(text).ids, text
    record = json.loads((quantized / "manifest.json").read_text())["compression"]["vocabulary"]
    assert record["rows_after"] == record["rows_before"] - len(drop) and record["max_logit_change"] <= 1e-5
