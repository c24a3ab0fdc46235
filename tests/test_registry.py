"""Base-model registry: offline resolution and supply-chain hash pinning, on the real packaged model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slm.errors import ModelError
from slm.models.registry import REGISTRY, available_models, resolve_base_model, verify_weights


def test_packaged_minilm_resolves_offline_with_pinned_hash(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_base_model("minilm-l6")
    assert resolved.source == "package"
    assert (resolved.path / "config.json").is_file()
    assert resolved.sha256["model.safetensors"] == REGISTRY["minilm-l6"].sha256["model.safetensors"]


def test_modified_weights_are_refused(tmp_path: Path) -> None:
    original = resolve_base_model("minilm-l6").path
    copy = tmp_path / "minilm"
    shutil.copytree(original, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        verify_weights(REGISTRY["minilm-l6"], copy)
    weights.unlink()
    with pytest.raises(ModelError, match="missing"):
        verify_weights(REGISTRY["minilm-l6"], copy)


def test_local_directory_and_unknown_names(tmp_path: Path) -> None:
    local = resolve_base_model(str(resolve_base_model("minilm-l6").path))
    assert local.source == "directory" and "model.safetensors" in local.sha256
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        resolve_base_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="unknown base model"):
        resolve_base_model("no-such-model")


def test_hub_id_offline_fails_with_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as info:
        resolve_base_model("some-org/some-model-that-is-not-cached")
    assert "\n" not in str(info.value) and "some-org/some-model" in str(info.value)


def test_models_listing_marks_what_is_installed() -> None:
    rows = {row["name"]: row for row in available_models()}
    assert rows["minilm-l6"]["installed"] is True
    assert rows["minilm-l6"]["languages"] == "English"
