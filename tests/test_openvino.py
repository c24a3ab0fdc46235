"""The OpenVINO backend (slm[openvino]): the same bundle run by OpenVINO, and NNCF int8 for it.

Uses the real MiniLM bundle trained on the BANKING77 slice (conftest ``exported``) and its test texts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("openvino")

from slm.api.compressing import compress  # noqa: E402
from slm.errors import BundleError, ConfigError  # noqa: E402
from slm.extras import MissingExtra  # noqa: E402
from slm.runtime.bundle import Bundle  # noqa: E402

SLICE = 64


def _texts(banking_test_csv: Path) -> list[str]:
    return pd.read_csv(banking_test_csv)["text"].tolist()[:SLICE]


@pytest.fixture(scope="module")
def int8_openvino(exported, tmp_path_factory) -> Path:
    """``slm compress --quantize int8-openvino`` of the exported fp32 bundle (NNCF; about a minute)."""
    out = tmp_path_factory.mktemp("ov") / "tiny-int8-openvino"
    compress(exported, out, quantize="int8-openvino")
    return out


@pytest.fixture(scope="module")
def int8_dynamic(exported, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "tiny-int8"
    compress(exported, out, quantize="int8")
    return out


def test_openvino_logits_match_onnx_runtime_on_fp32(exported, banking_test_csv) -> None:
    texts = _texts(banking_test_csv)
    ort_logits = Bundle(exported, backend="onnx")._transformer.logits(texts)
    ov_bundle = Bundle(exported, backend="openvino")
    ov_logits = ov_bundle._transformer.logits(texts)
    assert type(ov_bundle._transformer).__name__ == "OpenVinoComponent"
    assert np.abs(ort_logits - ov_logits).max() < 1e-3


@pytest.mark.slow(reason="quantizes with NNCF")
def test_int8_openvino_bundle_runs_on_openvino_and_agrees(exported, int8_openvino, banking_test_csv) -> None:
    texts = _texts(banking_test_csv)
    fp32 = [p["label"] for p in Bundle(exported).predict(texts, component="transformer")]
    model = Bundle(int8_openvino)
    assert model.backend == "openvino"  # chosen by default for a bundle quantized for OpenVINO
    spec = model.manifest.components.onnx
    assert spec is not None and spec.engine == "openvino" and spec.openvino_ir is not None
    assert spec.openvino_ir in model.manifest.files and "onnx/model.int8-openvino.bin" in model.manifest.files
    assert model.manifest.compression is not None
    assert model.manifest.compression["quantization"]["mode"] == "int8-openvino"
    int8 = [p["label"] for p in model.predict(texts, component="transformer")]
    agreement = np.mean([a == b for a, b in zip(fp32, int8, strict=True)])
    assert agreement >= 0.95, agreement
    # ONNX Runtime still runs the bundle (its fp32 ONNX file) when asked, or when OpenVINO is absent.
    onnx_labels = [p["label"] for p in Bundle(int8_openvino, backend="onnx").predict(texts, component="transformer")]
    assert onnx_labels == fp32


@pytest.mark.slow(reason="quantizes with ONNX Runtime")
def test_dynamic_int8_on_openvino_is_refused_in_one_line(int8_dynamic) -> None:
    model = Bundle(int8_dynamic, backend="openvino")
    with pytest.raises(BundleError) as caught:
        model.predict(["where is my card?"])
    message = str(caught.value)
    assert "\n" not in message
    assert "QAttention" in message and "--quantize int8-openvino" in message and "--backend onnx" in message


def test_missing_openvino_names_the_extra(exported, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails as if it were not installed
    model = Bundle(exported, backend="openvino")
    with pytest.raises(MissingExtra) as caught:
        model.predict(["where is my card?"])
    assert "pip install 'slm[openvino]'" in str(caught.value) and "\n" not in str(caught.value)


def test_missing_nncf_names_the_compress_extra(monkeypatch) -> None:
    """Running a bundle needs slm[openvino] only; quantizing for it needs NNCF too, a heavier extra."""
    from slm.compression.openvino import _import_nncf

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingExtra) as caught:
        _import_nncf()
    assert "pip install 'slm[openvino-compress]'" in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_backend_is_refused(exported) -> None:
    with pytest.raises(ConfigError, match="choose from onnx, openvino, torch"):
        Bundle(exported, backend="tensorrt")


def test_slm_predict_runs_on_the_engine_asked_for(exported, banking_test_csv, tmp_path) -> None:
    from tests.test_cli import slm

    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": _texts(banking_test_csv)}).to_csv(texts, index=False)
    labels = {}
    for backend in ("onnx", "openvino"):
        out = tmp_path / f"{backend}.csv"
        done = slm("predict", exported, texts, "-o", out, "--backend", backend, "--quiet")
        assert done.returncode == 0, done.stderr
        labels[backend] = pd.read_csv(out)["label"].tolist()
    assert len(labels["onnx"]) == SLICE and labels["openvino"] == labels["onnx"]  # fp32 on both: same labels
    refused = slm("predict", exported, texts, "--backend", "tensorrt")
    assert refused.returncode != 0 and "tensorrt" in refused.stderr


@pytest.mark.slow(reason="quantizes with NNCF")
def test_an_int8_openvino_bundle_is_not_exported_for_other_engines(int8_openvino, tmp_path) -> None:
    """Its int8 model is an OpenVINO IR; the ORT format and the browser would get the fp32 file labelled int8."""
    from slm.api.compressing import export_ort
    from slm.api.web import export_web

    with pytest.raises(ConfigError, match="quantized for OpenVINO") as caught:
        export_ort(int8_openvino, tmp_path / "ort")
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="quantized for OpenVINO"):
        export_web(int8_openvino, tmp_path / "web")
    assert not (tmp_path / "ort").exists() or not any((tmp_path / "ort").iterdir())
