"""The static turbo tier: model2vec distillation of a bundle's encoder + a linear head, numpy-only runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm.bundle.manifest import read_manifest
from slm.bundle.schema import StaticSpec
from slm.errors import BundleError, ConfigError, DataError
from slm.pipeline import DataSource
from slm.runtime.static import StaticComponent

EDGE_TEXTS = [
    "",
    "   ",
    "\u2603\u2603 \U0001f600",  # characters the WordPiece vocabulary only knows as [UNK]
    "my card still has not arrived " * 200,  # longer than 512 tokens: truncated
    "x" * 5000,  # one enormous word
    "Why was my top-up declined?",
]


def component(bundle: Path) -> StaticComponent:
    manifest = read_manifest(bundle)
    assert manifest.components.static is not None and manifest.labels is not None
    return StaticComponent(bundle, manifest.components.static, manifest.labels, manifest.multi_label)


def test_manifest_describes_the_static_model(static_bundle: Path, tiny_bundle: Path) -> None:
    manifest = read_manifest(static_bundle)  # also verifies every file hash
    parent = read_manifest(tiny_bundle)
    assert manifest.default_component == "static"
    assert set(manifest.components.names()) == {"static", "ngram"}
    assert manifest.components.static is not None and manifest.components.static.dir == "static"
    assert manifest.labels == parent.labels
    assert not (static_bundle / "model").exists() and not (static_bundle / "report").exists()
    assert not (static_bundle / "tokenizer").exists()  # only the dropped transformer used it
    for name in ("model.safetensors", "tokenizer.json", "config.json", "head.safetensors"):
        assert (static_bundle / "static" / name).is_file()
    assert not any(p.suffix in {".pkl", ".pickle", ".bin", ".pt"} for p in static_bundle.rglob("*"))

    assert manifest.compression is not None and manifest.metrics is not None and parent.metrics is not None
    static = manifest.compression["static"]
    assert static["dims"] == 128 and static["source"] == "model2vec distill of the fine-tuned encoder"
    assert 25_000 < static["vocabulary"] <= 30_522  # the encoder's own WordPiece vocabulary, [unused*] dropped
    metrics = manifest.metrics
    assert metrics["evaluated_on"] == "validation"
    assert set(metrics["validation"]) >= {"static", "teacher"}
    for who in ("static", "teacher"):
        assert {"accuracy", "macro_f1"} <= set(metrics["validation"][who])
    # The teacher's test numbers are kept, but never under a key that reads as this model's.
    assert "test" not in metrics and metrics["parent_test"] == parent.metrics["test"]
    assert manifest.recommendation is None and manifest.ensemble is None
    assert manifest.lineage is not None and manifest.lineage[-1].step == "static"
    written = json.loads((static_bundle / "manifest.json").read_text())
    assert "recommendation" not in written and "ensemble" not in written


def test_static_predictions_are_well_above_chance(static_bundle: Path, banking_test_csv: Path) -> None:
    manifest = read_manifest(static_bundle)
    frame = pd.read_csv(banking_test_csv)
    proba = component(static_bundle).predict_proba(frame["text"].tolist())
    assert proba.shape == (len(frame), len(manifest.labels or []))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    predicted = np.asarray(manifest.labels)[proba.argmax(axis=1)]
    accuracy = float((predicted == frame["category"].to_numpy()).mean())
    assert accuracy > 0.75, accuracy  # chance is 0.1 on the ten intents (measured: 0.94)
    assert manifest.metrics is not None and manifest.metrics["validation"]["static"]["accuracy"] > 0.5


def test_fast_pooling_matches_model2vec(static_bundle: Path, banking_test_csv: Path) -> None:
    """An independent path: model2vec's own StaticModel.encode, then the head in float64."""
    from model2vec import StaticModel
    from safetensors.numpy import load_file

    texts = pd.read_csv(banking_test_csv)["text"].tolist() + EDGE_TEXTS
    ours = component(static_bundle)
    reference = StaticModel.from_pretrained(static_bundle / "static")
    expected = reference.encode(texts, use_multiprocessing=False).astype(np.float64)
    got = ours.embed(texts, batch_size=7)  # several batches, one of them mostly edge cases
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3)  # model2vec rounds its means to float16
    edge = len(texts) - len(EDGE_TEXTS)
    assert not np.any(got[edge]) and not np.any(got[edge + 1])  # empty texts embed to zeros, as in model2vec

    head = load_file(str(static_bundle / "static" / "head.safetensors"))
    logits = expected @ head["weight"].T.astype(np.float64) + head["bias"]
    reference_proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    reference_proba /= reference_proba.sum(axis=1, keepdims=True)
    proba = ours.predict_proba(texts)
    np.testing.assert_allclose(proba, reference_proba, atol=2e-3)
    assert (proba.argmax(axis=1) == reference_proba.argmax(axis=1)).mean() > 0.99
    np.testing.assert_array_equal(ours.predict_proba(texts, batch_size=1), proba)  # batching changes nothing


def test_runtime_never_imports_torch_transformers_or_sklearn(static_bundle: Path) -> None:
    script = f"""
import json, sys
from pathlib import Path
from slm.bundle.schema import StaticSpec
from slm.runtime.static import StaticComponent
root = Path({str(static_bundle)!r})
manifest = json.loads((root / "manifest.json").read_text())
part = StaticComponent(root, StaticSpec.from_json(manifest["components"]["static"]), manifest["labels"], False)
proba = part.predict_proba(["my card has not arrived yet", "what is the exchange rate?", ""])
assert proba.shape == (3, len(manifest["labels"]))
heavy = ("torch", "transformers", "sklearn", "scipy", "model2vec", "onnxruntime")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_unknown_label_is_a_data_error_and_the_previous_bundle_survives(
    static_bundle: Path, tiny_bundle: Path, banking_csv: Path, tmp_path: Path
) -> None:
    from slm.compression.static import build_static_bundle

    frame = pd.read_csv(banking_csv)
    extra = pd.DataFrame({"text": [f"can I buy a pony with crypto, take {i}" for i in range(6)], "category": "pony"})
    bad = tmp_path / "bad.csv"
    pd.concat([frame, extra]).to_csv(bad, index=False)
    before = (static_bundle / "manifest.json").read_bytes()
    with pytest.raises(DataError) as info:
        build_static_bundle(tiny_bundle, static_bundle, DataSource(bad), show_progress=False)
    message = str(info.value)
    assert "pony" in message and "\n" not in message
    assert (static_bundle / "manifest.json").read_bytes() == before
    read_manifest(static_bundle)  # still complete and intact


def test_failure_while_writing_keeps_the_previous_bundle(
    static_bundle: Path, tiny_bundle: Path, banking_csv: Path, monkeypatch
) -> None:
    """A crash inside the bundle swap (here: saving the head) leaves the old output untouched."""
    import shutil

    from slm.compression import static as static_module

    def fake_distill(bundle, directory, *, dims, show_progress=True):  # reuse the distilled files: fast
        shutil.copytree(static_bundle / "static", directory)
        (directory / "head.safetensors").unlink()
        return {
            "dims": 128,
            "vocabulary": 0,
            "normalize": True,
            "max_length": 512,
            "embedding_dtype": "float16",
            "model2vec": None,
        }

    def broken_save(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(static_module, "distill_encoder", fake_distill)
    monkeypatch.setattr(static_module.LinearHead, "save", broken_save)
    before = {p.relative_to(static_bundle): p.read_bytes() for p in static_bundle.rglob("*") if p.is_file()}
    with pytest.raises(OSError, match="disk full"):
        static_module.build_static_bundle(
            tiny_bundle, static_bundle, DataSource(banking_csv), teacher_weight=0.0, show_progress=False
        )
    after = {p.relative_to(static_bundle): p.read_bytes() for p in static_bundle.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in static_bundle.parent.iterdir() if p.name.endswith(".staging")]


def test_bad_settings_are_refused_before_any_work(static_bundle: Path, tiny_bundle: Path, banking_csv: Path) -> None:
    from slm.compression.static import build_static_bundle

    with pytest.raises(ConfigError):
        build_static_bundle(tiny_bundle, static_bundle.parent / "x", DataSource(banking_csv), dims=1)
    with pytest.raises(ConfigError):
        build_static_bundle(tiny_bundle, static_bundle.parent / "x", DataSource(banking_csv), teacher_weight=2.0)
    with pytest.raises(BundleError, match="no transformer"):  # a static bundle has no encoder left to distill
        build_static_bundle(static_bundle, static_bundle.parent / "x", DataSource(banking_csv))
    assert not (static_bundle.parent / "x").exists()


def test_multi_label_head_and_component(tmp_path: Path, static_bundle: Path) -> None:
    """One sigmoid per label: fit_head learns soft multi-label targets; the component applies sigmoids."""
    import shutil

    from slm.compression.static import LinearHead, fit_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    truth = rng.normal(size=(3, 16))
    y = (x @ truth.T > 0).astype(np.float64)
    head, _ = fit_head(x, 0.8 * y + 0.1, multi_label=True, l2=1e-3)
    assert ((head.predict_proba(x, True) >= 0.5) == (y > 0)).mean() > 0.95

    root = tmp_path / "ml"
    shutil.copytree(static_bundle / "static", root / "static")
    dim = (read_manifest(static_bundle).compression or {})["static"]["dims"]
    LinearHead(rng.normal(size=(3, dim)), rng.normal(size=3), 1e-3).save(root / "static" / "head.safetensors")
    part = StaticComponent(root, StaticSpec(dir="static"), ["a", "b", "c"], True)
    proba = part.predict_proba(["card arrival", "exchange rate", ""])
    logits = part.logits(["card arrival", "exchange rate", ""])
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    with pytest.raises(BundleError, match="do not fit"):
        StaticComponent(root, StaticSpec(dir="static"), ["a", "b"], True)
