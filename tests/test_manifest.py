"""The typed manifest (slm.bundle.schema) against bundles the previous, dict-based code wrote.

``tests/fixtures/manifest-v2/bundle`` is a real format-version-2 bundle written by slm before the
manifest was typed (an n-gram-only classifier, derived once so it carries lineage; see the README
beside it), and ``exported-onnx.manifest.json`` the manifest of the tests' tiny bundle exported to
ONNX by that code. Nothing here trains a model: these are fast-lane tests.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import slm
from slm.bundle import manifest as bundle_manifest
from slm.bundle.derive import derive_bundle
from slm.bundle.schema import (
    BaseModelRef,
    Components,
    ComponentSpec,
    Digest,
    LineageStep,
    Manifest,
    NgramSpec,
    OnnxSpec,
    TransformerSpec,
    check,
    parse,
)
from slm.errors import BundleError

FIXTURES = Path(__file__).parent / "fixtures" / "manifest-v2"
BUNDLE = FIXTURES / "bundle"
EXPORTED = FIXTURES / "exported-onnx.manifest.json"
LABELS = ["card_arrival", "change_pin", "exchange_rate"]


@pytest.fixture(autouse=True)
def _no_key(monkeypatch) -> None:
    for name in ("SLM_BUNDLE_KEY", "SLM_BUNDLE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A private copy of the kept bundle (tests edit its manifest)."""
    return Path(shutil.copytree(BUNDLE, tmp_path / "bundle"))


def edit(bundle: Path, change: Callable[[dict], object], *, redigest: bool = True) -> None:
    """Change the manifest's JSON; with ``redigest`` recompute the unkeyed digest, as anyone can."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    if redigest:
        data["manifest_digest"] = bundle_manifest.manifest_digest(data, None)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def refused(bundle: Path, phrase: str) -> BundleError:
    with pytest.raises(BundleError, match=phrase) as caught:
        bundle_manifest.read_manifest(bundle)
    assert caught.value.exit_code == 4 and "\n" not in str(caught.value)
    return caught.value


# ---------------------------------------------------------------- bundles written before the typed manifest


def test_the_kept_version_2_bundle_loads_with_typed_fields() -> None:
    manifest = bundle_manifest.read_manifest(BUNDLE)  # digest and every file's sha256 verified
    assert isinstance(manifest, Manifest)
    assert (manifest.format, manifest.format_version, manifest.task) == ("slm-bundle", 2, "single_label")
    assert manifest.labels == LABELS and not manifest.multi_label
    assert manifest.slm_version == "0.1.0" and manifest.default_component == "ngram"
    assert manifest.base_model == BaseModelRef(name="none", source="ngram baseline only", sha256={})
    assert manifest.base_model_name == "none"
    assert manifest.components.ngram == NgramSpec(dir="ngram")
    assert manifest.components.names() == ["ngram"] and manifest.components.onnx is None
    assert manifest.components.ngram.paths() == ["ngram"]
    assert manifest.ensemble is None and manifest.thresholds == {}
    assert manifest.metrics == {"evaluated_on": "test", "test": {"ngram_baseline": {"accuracy": 1.0}}}
    assert manifest.data is not None and manifest.data["n_train"] == 24
    assert manifest.training is not None and manifest.training["method"] == "ngram"
    assert manifest.lineage == [
        LineageStep(step="copy", parent="/tmp/mf-gen/ngram-parent", parent_created="2026-12-03T12:00:00+00:00")
    ]
    assert manifest.compression == {} and manifest.recommendation is None and manifest.extra == {}
    assert sorted(manifest.files) == ["ngram/ngram.json", "ngram/ngram.safetensors"]
    assert manifest.manifest_digest is not None and manifest.manifest_digest.algorithm == "sha256"
    assert bundle_manifest.integrity_summary(manifest).startswith("manifest sha256 verified")

    model = slm.load(BUNDLE)
    assert model.manifest == manifest and model.components == ["ngram"]
    assert model.predict(["my card has not arrived yet"])[0]["label"] == "card_arrival"


def test_the_kept_export_manifest_has_typed_components() -> None:
    manifest = parse(EXPORTED.parent, json.loads(EXPORTED.read_text(encoding="utf-8")))
    transformer, onnx = manifest.components.transformer, manifest.components.onnx
    assert isinstance(transformer, TransformerSpec) and isinstance(onnx, OnnxSpec)
    assert (transformer.weights, transformer.max_length) == ("model/model.safetensors", 48)
    assert transformer.normalize is False and transformer.architecture == "EncoderClassifier"
    assert (onnx.file, onnx.tokenizer, onnx.precision, onnx.opset) == ("onnx/model.onnx", "tokenizer", "fp32", 17)
    assert onnx.inputs == ["input_ids", "attention_mask"] and onnx.parity is not None
    assert onnx.paths() == ["onnx/model.onnx", "tokenizer"]
    assert manifest.components.names() == ["transformer", "ngram", "onnx"]
    assert manifest.ensemble is not None and manifest.ensemble.transformer_weight == 0.5
    assert manifest.ensemble.log_prior_shift == [0.0] * 10 and manifest.ensemble.chosen_on == "validation"
    assert manifest.base_model_name == "minilm-l6" and len(manifest.labels or []) == 10
    assert [step.step for step in manifest.lineage or []] == ["export"]


@pytest.mark.parametrize("path", [BUNDLE / "manifest.json", EXPORTED], ids=["bundle", "exported"])
def test_typed_and_back_is_the_same_file(path: Path) -> None:
    """Keys, their order, explicit nulls and the formatting survive: what was read is what is written."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    again = Manifest.from_json(data).to_json()
    assert list(again) == list(data) and again == data
    assert json.dumps(again, indent=2, ensure_ascii=False) + "\n" == text


def test_rewriting_a_kept_bundle_gives_the_same_bytes(bundle) -> None:
    """write_manifest over the same files writes exactly what the dict-based code wrote, digest included."""
    before = (bundle / "manifest.json").read_bytes()
    written = bundle_manifest.write_manifest(bundle, bundle_manifest.read_manifest(bundle))
    assert (bundle / "manifest.json").read_bytes() == before
    assert written == bundle_manifest.read_manifest(bundle)


# ---------------------------------------------------------------- written by the typed code


def test_a_manifest_built_in_code_round_trips(bundle) -> None:
    (bundle / "manifest.json").unlink()
    built = Manifest(
        slm_version="0.1.0",
        created="2026-12-03T12:00:00+00:00",
        task="single_label",
        labels=LABELS,
        base_model=BaseModelRef(name="none", source="ngram baseline only", sha256={}),
        components=Components(ngram=NgramSpec(dir="ngram")),
        default_component="ngram",
        thresholds={},
        metrics={"evaluated_on": "test", "test": {"ngram_baseline": {"accuracy": 1.0}}},
        lineage=[LineageStep(step="copy", parent="elsewhere")],  # parent_created: written as null
        extra={"app_section": {"kept": True}},
    )
    written = bundle_manifest.write_manifest(bundle, built)
    data = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert list(data)[:2] == ["format", "format_version"] and list(data)[-2:] == ["files", "manifest_digest"]
    assert data["lineage"] == [{"step": "copy", "parent": "elsewhere", "parent_created": None}]
    assert data["app_section"] == {"kept": True} and "ensemble" not in data and "recommendation" not in data
    assert data["manifest_digest"] == bundle_manifest.manifest_digest(data, None)
    read = bundle_manifest.read_manifest(bundle)
    assert read == written and read.extra == {"app_section": {"kept": True}}
    assert replace(read, files={}, manifest_digest=None) == replace(built, files={}, manifest_digest=None)
    assert Digest(**read.to_json()["manifest_digest"]) == read.manifest_digest
    assert slm.load(bundle).predict(["how do I change my PIN?"])[0]["label"] == "change_pin"


def test_a_derived_bundle_extends_the_typed_lineage(bundle, tmp_path) -> None:
    def change(staging: Path, manifest: Manifest) -> Manifest:
        assert manifest.lineage is not None and manifest.lineage[-1].step == "twice"
        manifest.metrics = None  # read as an object: set to None, the key goes
        return manifest

    child = derive_bundle(bundle, tmp_path / "child", change, step="twice")
    parent = bundle_manifest.read_manifest(bundle)
    assert [step.step for step in child.lineage or []] == ["copy", "twice"]
    assert child.lineage is not None and child.lineage[-1].parent_created == parent.created
    assert child.labels == parent.labels and child.files == parent.files
    data = json.loads((tmp_path / "child" / "manifest.json").read_text(encoding="utf-8"))
    assert "metrics" not in data and list(data) == [k for k in json.loads(BUNDLE.joinpath("manifest.json").read_text())
                                                     if k != "metrics"]  # fmt: skip


def test_components_of_unknown_kinds_are_kept_and_their_paths_checked(bundle) -> None:
    edit(bundle, lambda m: m["components"].__setitem__("future", {"dir": "ngram", "file": "ngram.json", "x": 1}))
    manifest = bundle_manifest.read_manifest(bundle)
    future = manifest.components.get("future")
    assert type(future) is ComponentSpec and future.extra == {"dir": "ngram", "file": "ngram.json", "x": 1}
    assert future.paths() == ["ngram", "ngram/ngram.json"] and "future" in manifest.components
    assert manifest.components.to_json()["future"] == {"dir": "ngram", "file": "ngram.json", "x": 1}
    assert manifest.components.remove("future") is future and manifest.components.names() == ["ngram"]

    edit(bundle, lambda m: m["components"]["future"].__setitem__("file", "../outside.json"))
    refused(bundle, "outside the bundle folder")


# ---------------------------------------------------------------- integrity and refusals


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda m: m["labels"].__setitem__(0, "HACKED"), "manifest.json does not match its recorded sha256"),
        (lambda m: m["lineage"][0].__setitem__("step", "train"), "manifest.json does not match its recorded sha256"),
        (lambda m: m["metrics"]["test"]["ngram_baseline"].__setitem__("accuracy", 0.5), "has been modified"),
    ],
    ids=["labels", "lineage", "metrics"],
)
def test_a_tampered_field_fails_the_digest(bundle, change, phrase) -> None:
    edit(bundle, change, redigest=False)
    refused(bundle, phrase)
    bundle_manifest.read_manifest(bundle, verify=False)  # structurally fine: only the digest catches it


def test_a_signed_kept_bundle_needs_its_key(bundle, monkeypatch) -> None:
    monkeypatch.setenv("SLM_BUNDLE_KEY", "k" * 32)
    refused(bundle, "not signed but a bundle key is configured")
    signed = bundle_manifest.sign_bundle(bundle)
    assert signed.manifest_digest is not None and signed.manifest_digest.algorithm == "hmac-sha256"
    assert bundle_manifest.read_manifest(bundle) == signed
    assert bundle_manifest.integrity_summary(signed) == "manifest signature (hmac-sha256) verified"
    before, after = (json.loads(p.read_text()) for p in (BUNDLE / "manifest.json", bundle / "manifest.json"))
    assert {k: v for k, v in before.items() if k != "manifest_digest"} == {
        k: v for k, v in after.items() if k != "manifest_digest"
    }
    monkeypatch.setenv("SLM_BUNDLE_KEY", "another key")
    refused(bundle, "signature does not match")


def test_a_version_1_manifest_loads_with_a_warning_unless_a_key_is_set(bundle, monkeypatch, caplog) -> None:
    def version_1(manifest: dict) -> None:
        manifest["format_version"] = 1
        del manifest["manifest_digest"]

    edit(bundle, version_1, redigest=False)
    with caplog.at_level(logging.WARNING, logger="slm.bundle.manifest"):
        manifest = bundle_manifest.read_manifest(bundle)
    assert manifest.format_version == 1 and manifest.manifest_digest is None and manifest.labels == LABELS
    assert any("not integrity-checked" in r.getMessage() for r in caplog.records), caplog.text
    assert bundle_manifest.integrity_summary(manifest) == "manifest not integrity-checked (format version 1)"
    monkeypatch.setenv("SLM_BUNDLE_KEY", "k" * 32)
    refused(bundle, "not signed but a bundle key is configured")


@pytest.mark.parametrize("version", [3, 99, "2", None])
def test_an_unknown_format_version_is_refused_in_one_line(bundle, version) -> None:
    edit(bundle, lambda m: m.__setitem__("format_version", version))
    error = refused(bundle, f"bundle format version {version} is not supported")
    assert "this slm reads versions 1, 2" in str(error)


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda m: m.pop("task"), "'task' is missing"),
        (lambda m: m.pop("labels"), "'labels' is missing"),
        (lambda m: m["components"]["ngram"].pop("dir"), "'components.ngram.dir' is missing"),
        (lambda m: m["components"].__setitem__("onnx", {"file": "ngram/ngram.json"}), "'components.onnx.tokenizer' is"),
        (lambda m: m["lineage"][0].pop("step"), "every 'lineage' entry must be an object with a 'step' name"),
        (lambda m: m.pop("files"), "'files' must be an object listing every file's sha256"),
        (lambda m: m.pop("manifest_digest"), "'manifest_digest' must be an object"),
    ],
    ids=["task", "labels", "ngram.dir", "onnx.tokenizer", "lineage.step", "files", "digest"],
)
def test_a_missing_required_field_is_refused_in_one_line(bundle, change, phrase) -> None:
    edit(bundle, change, redigest=False)
    error = refused(bundle, phrase)
    assert "manifest.json is malformed" in str(error)


@pytest.mark.parametrize(
    ("path", "value", "phrase"),
    [
        (("components", "onnx", "precision"), 8, "'components.onnx.precision' must be a string, not a number"),
        (("components", "onnx", "inputs"), ["input_ids", 2], "'components.onnx.inputs[1]' must be a string"),
        (("components", "transformer", "normalize"), "no", "'components.transformer.normalize' must be a boolean"),
        (("ensemble", "chosen_on"), None, "'ensemble.chosen_on' must be a string, not null"),
        (("base_model", "sha256", "model.safetensors"), 5, "'base_model.sha256.model.safetensors' must be a string"),
        (("lineage",), [{"step": "export", "parent": 3}], "'lineage[0].parent' must be a string"),
        (("created",), 20261203, "'created' must be a string"),
        (("base_model",), 5, "'base_model' must be an object or a string or null"),
        (("metrics",), [], "'metrics' must be an object or null"),
    ],
)
def test_every_typed_field_is_checked_against_its_type(path: tuple[str, ...], value: object, phrase: str) -> None:
    """The typed fields hold the types they declare: one line names the field, not a TypeError later."""
    data = json.loads(EXPORTED.read_text(encoding="utf-8"))
    record = data
    for key in path[:-1]:
        record = record[key]
    record[path[-1]] = value
    with pytest.raises(BundleError, match=re.escape(f"manifest.json is malformed: {phrase}")) as caught:
        parse(Path("b"), data)
    assert "\n" not in str(caught.value)


def test_nullable_fields_take_null() -> None:
    data = json.loads(EXPORTED.read_text(encoding="utf-8"))
    data.update(metrics=None, base_model=None, compression=None)
    data["ensemble"]["log_prior_shift"] = None
    check(data)
    manifest = Manifest.from_json(data)
    assert manifest.metrics is None and manifest.base_model_name is None
    assert manifest.to_json() == data  # nulls that were read are written back
