"""A bundle's meaning is integrity-checked: the manifest's digest or signature, the paths it names, its
structure, and its label count against the model's outputs. Every refusal is one line with exit 4.

The kept untrained tiny bundle (``untrained_exported``: ONNX, PyTorch weights, n-gram, ten labels) is
cloned per test with hard links; only ``manifest.json`` is a private copy, and tests never write into the
other (shared) files, they only add files or links beside them. What is checked is the bundle, never what
its model predicts, so no test here needs a trained model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from slm.bundle import manifest as bundle_manifest
from slm.errors import BundleError, ConfigError
from slm.runtime import Bundle
from slm.runtime import load as load_runtime
from slm.serving import ModelService, ServeConfig
from tests.test_cli import assert_one_line_error, slm

TEXT = '{"text": "my card has not arrived yet"}\n'
KEY_VARIABLES = ("SLM_BUNDLE_KEY", "SLM_BUNDLE_KEY_FILE")


@pytest.fixture(autouse=True)
def _no_key(monkeypatch) -> None:
    """No signing key unless a test sets one (a developer's environment must not change the results)."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def clone(bundle: Path, target: Path) -> Path:
    """``bundle`` at ``target``: files hard-linked, ``manifest.json`` copied (tests edit only that)."""
    shutil.copytree(bundle, target, copy_function=os.link, ignore=shutil.ignore_patterns("manifest.json"))
    shutil.copy(bundle / "manifest.json", target / "manifest.json")
    return target


def edit(bundle: Path, change: Callable[[dict], object], *, redigest: bool = True) -> dict:
    """Apply ``change`` to the manifest; with ``redigest``, recompute the unkeyed sha256 digest, as anyone
    can: what is left to catch the edit is the structure, path and width checks (or a signature)."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    if redigest and isinstance(manifest, dict) and manifest.get("format_version") == 2:
        manifest["manifest_digest"] = bundle_manifest.manifest_digest(manifest, None)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def predict(bundle: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    return slm("predict", bundle, "-", *extra, stdin=TEXT, **env)


# ---------------------------------------------------------------- the manifest's own digest


def test_a_written_bundle_carries_a_digest_of_its_manifest(untrained_exported) -> None:
    manifest = bundle_manifest.read_manifest(untrained_exported)
    assert manifest.format_version == 2 and manifest.manifest_digest is not None
    # sha256 of the canonical JSON
    assert manifest.manifest_digest.to_json() == bundle_manifest.manifest_digest(manifest, None)
    assert manifest.manifest_digest.algorithm == "sha256"
    info = slm("info", untrained_exported)
    assert info.returncode == 0, info.stderr
    assert "manifest sha256 verified" in info.stdout


def test_edited_labels_are_refused(untrained_exported, tmp_path) -> None:
    """The review's case: a label renamed in manifest.json was served as if the model had learned it."""
    bundle = clone(untrained_exported, tmp_path / "b")
    edit(bundle, lambda m: m["labels"].__setitem__(0, "HACKED_card_arrival"), redigest=False)
    proc = predict(bundle)
    assert "HACKED" not in proc.stdout
    assert_one_line_error(proc, "manifest.json does not match its recorded sha256", code=4)
    with pytest.raises(BundleError, match="has been modified"):
        load_runtime(bundle)


def test_a_signed_bundle_needs_its_key(untrained_exported, tmp_path, monkeypatch) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")
    monkeypatch.setenv("SLM_BUNDLE_KEY", "the right key, 32 bytes or more....")
    signed = bundle_manifest.sign_bundle(bundle)
    assert signed.manifest_digest is not None and signed.manifest_digest.algorithm == "hmac-sha256"
    assert load_runtime(bundle).predict(["my card has not arrived yet"])[0]["label"] in (signed.labels or [])

    key_file = tmp_path / "key"
    key_file.write_text("the right key, 32 bytes or more....\n")  # a trailing newline is not part of the key
    monkeypatch.delenv("SLM_BUNDLE_KEY")
    monkeypatch.setenv("SLM_BUNDLE_KEY_FILE", str(key_file))
    load_runtime(bundle)

    monkeypatch.delenv("SLM_BUNDLE_KEY_FILE")
    with pytest.raises(BundleError, match=r"signed \(hmac-sha256\) but no key is configured"):
        load_runtime(bundle)
    proc = predict(bundle, SLM_BUNDLE_KEY="another key")
    assert_one_line_error(proc, "signature does not match", code=4)

    # Edited, with the unkeyed digest recomputed (anyone can): refused while a key is configured.
    edit(bundle, lambda m: m["labels"].__setitem__(0, "HACKED_card_arrival"))
    monkeypatch.setenv("SLM_BUNDLE_KEY", "the right key, 32 bytes or more....")
    with pytest.raises(BundleError, match="not signed but a bundle key is configured"):
        load_runtime(bundle)
    monkeypatch.setenv("SLM_BUNDLE_KEY_FILE", str(key_file))
    with pytest.raises(ConfigError, match="set only one"):
        load_runtime(bundle)


def test_a_version_1_bundle_loads_with_a_warning_unless_a_key_is_set(
    untrained_exported, tmp_path, monkeypatch, caplog
) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")

    def version_1(manifest: dict) -> None:
        manifest["format_version"] = 1
        manifest.pop("manifest_digest", None)  # absent before format version 2

    edit(bundle, version_1, redigest=False)
    with caplog.at_level(logging.WARNING, logger="slm.bundle.manifest"):
        model = load_runtime(bundle)
    assert model.predict(["my card has not arrived yet"])[0]["label"] in model.labels
    assert any("not integrity-checked" in r.getMessage() for r in caplog.records), caplog.text
    monkeypatch.setenv("SLM_BUNDLE_KEY", "k" * 32)
    with pytest.raises(BundleError, match="not signed but a bundle key is configured"):
        load_runtime(bundle)
    signed = bundle_manifest.sign_bundle(bundle)  # how an existing bundle is brought under the key
    assert signed.format_version == 2 and load_runtime(bundle).labels == model.labels


# ---------------------------------------------------------------- paths the manifest names


def _outside_absolute(bundle: Path, outside: Path) -> None:
    edit(bundle, lambda m: m["components"]["onnx"].__setitem__("file", str(outside / "model.onnx")))


def _outside_relative(bundle: Path, outside: Path) -> None:
    edit(bundle, lambda m: m["components"]["onnx"].__setitem__("file", f"../{outside.name}/model.onnx"))


def _symlink_out(bundle: Path, outside: Path) -> None:
    """A link inside the bundle to a folder outside it, listed with the right hash (the review's case)."""
    (bundle / "elsewhere").symlink_to(outside, target_is_directory=True)
    digest = hashlib.sha256((outside / "model.onnx").read_bytes()).hexdigest()

    def change(manifest: dict) -> None:
        manifest["components"]["onnx"]["file"] = "elsewhere/model.onnx"
        manifest["files"]["elsewhere/model.onnx"] = digest

    edit(bundle, change)


def _unlisted_file(bundle: Path, outside: Path) -> None:
    os.link(outside / "model.onnx", bundle / "onnx" / "other.onnx")
    edit(bundle, lambda m: m["components"]["onnx"].__setitem__("file", "onnx/other.onnx"))


def _unlisted_file_beside_the_tokenizer(bundle: Path, outside: Path) -> None:
    (bundle / "tokenizer" / "added_tokens.json").write_text('{"HACKED": 0}', encoding="utf-8")


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        (_outside_absolute, "outside the bundle folder"),
        (_outside_relative, "outside the bundle folder"),
        (_symlink_out, "outside the bundle folder"),
        (_unlisted_file, "onnx/other.onnx is not listed in the manifest"),
        (_unlisted_file_beside_the_tokenizer, "tokenizer/added_tokens.json is not listed in the manifest"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_only_listed_files_inside_the_bundle_are_opened(untrained_exported, tmp_path, case, phrase) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.link(untrained_exported / "onnx" / "model.onnx", outside / "model.onnx")
    case(bundle, outside)
    with pytest.raises(BundleError, match=phrase):
        load_runtime(bundle).predict(["my card has not arrived yet"])


def test_info_and_predict_refuse_a_component_path_outside_the_bundle(untrained_exported, tmp_path) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.link(untrained_exported / "onnx" / "model.onnx", outside / "model.onnx")
    _outside_absolute(bundle, outside)
    info = slm("info", bundle)
    assert "all match" not in info.stdout  # it said every file matched while loading a file from elsewhere
    assert_one_line_error(info, "outside the bundle folder", code=4)
    assert_one_line_error(predict(bundle), "outside the bundle folder", code=4)


# ---------------------------------------------------------------- labels against the model's outputs


def _nine_labels(manifest: dict) -> None:
    """76 labels for a 77-output model, in small: the last label dropped, the manifest otherwise consistent."""
    manifest["labels"] = manifest["labels"][:-1]
    manifest["ensemble"]["log_prior_shift"] = None


def test_label_count_must_match_the_model_outputs(untrained_exported, tmp_path) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")
    edit(bundle, _nine_labels)
    assert_one_line_error(predict(bundle), "ONNX model has 10 outputs but the manifest lists 9 labels", code=4)
    for component, what in [("ngram", "n-gram model"), ("ensemble", "ONNX model")]:
        with pytest.raises(BundleError, match=f"{what} has 10 outputs but the manifest lists 9 labels"):
            load_runtime(bundle).predict(["my card has not arrived yet"], component=component)
    pytest.importorskip("torch")
    with pytest.raises(BundleError, match="PyTorch model has 10 outputs but the manifest lists 9 labels"):
        Bundle(bundle, backend="torch").predict(["my card has not arrived yet"])


def test_serving_refuses_a_label_count_that_does_not_fit_at_start_up(untrained_exported, tmp_path) -> None:
    """Before: the server started and answered every request with a 500 (zip of 10 scores and 9 labels)."""
    bundle = clone(untrained_exported, tmp_path / "b")
    edit(bundle, _nine_labels)
    with pytest.raises(BundleError, match="cannot serve 'tiny'.*10 outputs but the manifest lists 9 labels"):
        ModelService.load([("tiny", bundle)], ServeConfig(access_log=False))
    try:
        proc = slm("serve", bundle, "--port", "0")
    except subprocess.TimeoutExpired:
        pytest.fail("slm serve started with a manifest whose labels do not fit the model")
    assert_one_line_error(proc, "10 outputs but the manifest lists 9 labels", code=4)


# ---------------------------------------------------------------- malformed manifests


def _parent(manifest: dict, path: tuple[str, ...]) -> tuple[dict | list, str | int]:
    """The record holding the last key of ``path``, and that key (an index inside a list)."""
    record: dict | list = manifest
    for key in path[:-1]:
        record = record[int(key)] if isinstance(record, list) else record[key]
    return record, int(path[-1]) if isinstance(record, list) else path[-1]


def _set(path: str | tuple[str, ...], value: object) -> Callable[[dict], None]:
    """Set ``path`` (dotted, or a tuple when a key holds a dot) of the manifest to ``value``."""
    keys = tuple(path.split(".")) if isinstance(path, str) else path

    def change(manifest: dict) -> None:
        record, key = _parent(manifest, keys)
        record[key] = value  # type: ignore[index]

    change.__name__ = f"{'.'.join(keys)}={json.dumps(value)[:20]}"
    return change


def _delete(path: str) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        record, key = _parent(manifest, tuple(path.split(".")))
        del record[key]  # type: ignore[arg-type]

    change.__name__ = f"del {path}"
    return change


MALFORMED = [
    (_set("components", ["onnx", "ngram"]), "'components' must be an object"),
    (_set("components.onnx", "onnx/model.onnx"), "component 'onnx' must be an object"),
    (_set("components.ngram", None), "component 'ngram' must be an object"),
    (_delete("components.onnx.file"), "'components.onnx.file' is missing"),
    (_set("components.onnx.file", 5), "'components.onnx.file' must be a string"),
    (_set("components.onnx.max_length", "48"), "'components.onnx.max_length' must be an integer"),
    (_delete("components"), "'components' must be an object"),
    (_delete("task"), "'task' is missing"),
    (_set("task", ["single_label"]), "'task' must be a string"),
    (_delete("labels"), "'labels' is missing"),
    (_set("labels", "card_arrival"), "'labels' must be a non-empty list"),
    (_set("labels", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), "'labels' must hold non-empty strings"),
    (_set("labels.1", "card_arrival"), "'labels' names 'card_arrival' twice"),
    (_set("files", []), "'files' must be an object"),
    (_set("files", {}), "'files' lists no files"),
    (_set(("files", "onnx/model.onnx"), "not-a-sha256"), "gives onnx/model.onnx a hash that is not a sha256"),
    (_set(("files", "onnx/model.onnx"), None), "gives onnx/model.onnx a hash that is not a sha256"),
    (_set("ensemble.transformer_weight", "0.5"), "'ensemble.transformer_weight' must be a number"),
    (_set("ensemble.log_prior_shift", [0.0]), "'ensemble.log_prior_shift' must be null or 10 numbers"),
    (_set("thresholds", {"transformer": [0.5, 0.5]}), "'thresholds.transformer' must be 10 numbers"),
    (_set("thresholds", [0.5]), "'thresholds' must be an object"),
    (_set("lineage", [1]), "every 'lineage' entry must be an object"),
    (_set("lineage", {"step": "export"}), "'lineage' must be a list"),
    (_set("default_component", 3), "'default_component' must be a string"),
    (_set("metrics", ["accuracy"]), "'metrics' must be an object"),
    (_set("compression", "int8"), "'compression' must be an object"),
]
UNDIGESTED = [
    (_set("manifest_digest", "0" * 64), "'manifest_digest' must be an object"),
    (_set("manifest_digest.value", "XYZ"), "'manifest_digest.value' must be 64 lowercase hex digits"),
    (_set("manifest_digest.algorithm", "md5"), "'manifest_digest.algorithm' must be one of"),
    (_delete("manifest_digest"), "'manifest_digest' must be an object"),
    (_set("format_version", True), "bundle format version True is not supported"),
]


@pytest.mark.parametrize(
    ("change", "phrase", "redigest"),
    [(c, p, True) for c, p in MALFORMED] + [(c, p, False) for c, p in UNDIGESTED],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_a_malformed_manifest_is_refused_in_one_line(untrained_exported, tmp_path, change, phrase, redigest) -> None:
    """Each was a KeyError/TypeError/AttributeError ("internal error", exit 1), or loaded and failed later."""
    bundle = clone(untrained_exported, tmp_path / "b")
    edit(bundle, change, redigest=redigest)
    with pytest.raises(BundleError, match=phrase) as refused:
        load_runtime(bundle).predict(["my card has not arrived yet"])
    assert refused.value.exit_code == 4 and "\n" not in str(refused.value)


def test_a_malformed_manifest_gets_exit_4_from_the_commands(untrained_exported, tmp_path) -> None:
    bundle = clone(untrained_exported, tmp_path / "b")
    edit(bundle, _set("components", ["onnx", "ngram"]))
    assert_one_line_error(slm("info", bundle), "'components' must be an object", code=4)
    assert_one_line_error(predict(bundle), "'components' must be an object", code=4)
    (bundle / "manifest.json").write_text("[1, 2, 3]", encoding="utf-8")
    assert_one_line_error(slm("info", bundle), "is not an slm bundle manifest", code=4)
