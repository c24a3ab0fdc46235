"""LoRA / AdaLoRA adapters on the real minilm-l6: few trainable weights, and merged away before saving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import slm
from slm.models.encoder import build_classifier
from slm.models.registry import resolve_base_model
from slm.training.adapters import add_adapters, count_parameters, merge_adapters
from slm.training.batching import collate, encode_texts
from slm.training.config import TrainConfig
from tests.conftest import banking_frame

SEED = 7


@pytest.fixture(scope="module")
def base_path() -> Path:
    return resolve_base_model("minilm-l6").path


@pytest.fixture(scope="module")
def real_batch(base_path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One real text per intent, tokenised the way training does it (small: each step costs seconds)."""
    frame = banking_frame("train", per_class=1, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    tokenizer.backend_tokenizer.no_padding()
    encoded = encode_texts(tokenizer, frame["text"].tolist(), 32)
    input_ids, mask = collate(encoded.ids, int(tokenizer.pad_token_id or 0))
    names = sorted(frame["category"].unique())
    targets = torch.tensor([names.index(c) for c in frame["category"]])
    return input_ids, mask, targets


def _loss(model, batch) -> float:
    input_ids, mask, targets = batch
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(input_ids, mask), targets).item()


def _train_steps(model, batch, steps: int, hook=None) -> None:
    """Plain AdamW steps on the trainable parameters; ``hook(step)`` after each step, before zero_grad."""
    input_ids, mask, targets = batch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for step in range(steps):
        loss = torch.nn.functional.cross_entropy(model(input_ids, mask), targets)
        loss.backward()
        optimizer.step()
        if hook is not None:
            hook(step)
        optimizer.zero_grad(set_to_none=True)


def _check_adapters_then_merge(method: str, base_path: Path, batch, steps: int, *, max_share: float) -> None:
    torch.manual_seed(SEED)
    model = build_classifier(base_path, 10)
    reference = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    total_before = count_parameters(model).total
    hook = add_adapters(model, method, TrainConfig(), total_steps=20)
    assert (hook is not None) == (method == "adalora")
    counted = count_parameters(model)
    assert counted.total > total_before  # the adapters are counted
    assert 0 < counted.share <= max_share, counted.to_dict()
    named = dict(model.named_parameters())
    adapters = {n for n in named if "lora_" in n}
    assert adapters and all(named[n].requires_grad for n in adapters)
    frozen = [n for n in named if n.startswith("encoder.") and "lora_" not in n]
    assert len(frozen) > 90 and not any(named[n].requires_grad for n in frozen)
    assert named["head.weight"].requires_grad
    assert counted.trainable == sum(named[n].numel() for n in adapters) + 384 * 10 + 10

    model.eval()  # no dropout: losses and logits are comparable
    before = _loss(model, batch)
    _train_steps(model, batch, steps, hook)
    after = _loss(model, batch)
    assert after < before - 0.05, (before, after)
    # the pretrained weights did not move; only the adapters (and the head) did
    base_now = model.encoder.get_base_model().state_dict()
    for key in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(base_now[key.replace(".weight", ".base_layer.weight")], reference[key])

    input_ids, mask, _ = batch
    with torch.no_grad():
        logits = model(input_ids, mask)
    merge_adapters(model)
    from peft import PeftModel

    assert not isinstance(model.encoder, PeftModel)
    assert not any("lora" in k or "base_layer" in k for k in model.state_dict())
    with torch.no_grad():
        merged = model(input_ids, mask)
    assert (merged - logits).abs().max().item() <= 1e-4
    # merging changed the weights themselves (the adapters had learnt something)
    merged_state = model.encoder.state_dict()
    assert not torch.allclose(
        merged_state["encoder.layer.0.attention.self.query.weight"],
        reference["encoder.layer.0.attention.self.query.weight"],
    )
    fresh = build_classifier(base_path, 10)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    merge_adapters(model)  # a second merge is a no-op
    with torch.no_grad():
        assert torch.equal(model(input_ids, mask), merged)


@pytest.mark.slow(reason="trains a model: AdamW steps on the real minilm-l6")
def test_lora_trains_few_weights_and_merges_exactly(base_path, real_batch) -> None:
    _check_adapters_then_merge("lora", base_path, real_batch, steps=3, max_share=0.02)


@pytest.mark.slow(reason="trains a model: AdamW steps on the real minilm-l6")
def test_adalora_allocates_ranks_and_merges_exactly(base_path, real_batch) -> None:
    # AdaLoRA starts at 1.5x the rank, so it may hold a little more than LoRA
    _check_adapters_then_merge("adalora", base_path, real_batch, steps=4, max_share=0.03)


def test_adapter_errors(base_path) -> None:
    from slm.errors import ConfigError

    model = build_classifier(base_path, 3)
    with pytest.raises(ConfigError, match="at least 10 training steps"):
        add_adapters(model, "adalora", TrainConfig(), total_steps=9)
    with pytest.raises(ConfigError, match="unknown adapter method"):
        add_adapters(model, "prefix", TrainConfig(), total_steps=20)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("adapters-data") / "banking_8.csv"
    banking_frame("train", per_class=8).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def lora_bundle(slice_csv, banking_test_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapters") / "lora"
    slm.train(
        slice_csv,
        output=out,
        test=banking_test_csv,
        val_size=0.125,
        show_progress=False,
        config=TrainConfig(method="lora", epochs=2, batch_size=16, max_length=48, seed=SEED),
    )
    return out


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory) -> Path:
    """The cheapest real full fine-tune (the structure to compare with, not its accuracy)."""
    base = tmp_path_factory.mktemp("adapters-full")
    data = base / "banking_4.csv"
    banking_frame("train", per_class=4).to_csv(data, index=False)
    slm.train(
        data,
        output=base / "full",
        val_size=0.25,
        test_size=0.25,
        show_progress=False,
        config=TrainConfig(method="full", epochs=1, batch_size=16, max_length=32, seed=SEED),
    )
    return base / "full"


def test_lora_end_to_end(lora_bundle, banking_test_csv) -> None:
    manifest = json.loads((lora_bundle / "manifest.json").read_text())
    training = manifest["training"]
    assert training["method"] == "lora" and training["epochs_run"] == 2
    assert 0 < training["parameters"]["trainable_share"] <= 0.02
    assert manifest["components"]["transformer"]["normalize"] is False
    state = load_file(str(lora_bundle / "model" / "model.safetensors"))
    assert not [k for k in state if "lora" in k.lower() or "base_layer" in k]
    accuracy = manifest["metrics"]["test"]["transformer"]["accuracy"]
    assert accuracy >= 0.5, accuracy  # ten intents: chance is 0.1; measured 0.83
    texts = pd.read_csv(banking_test_csv)["text"].tolist()[:16]
    proba = slm.load(lora_bundle).predict_proba(texts, component="transformer")
    assert proba.shape == (16, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_lora_bundle_exports_like_a_full_fine_tune(lora_bundle, full_bundle, banking_test_csv, tmp_path) -> None:
    import onnx

    from slm.compression.export import ONNX_FILE, export_bundle

    lora_state = load_file(str(lora_bundle / "model" / "model.safetensors"))
    full_state = load_file(str(full_bundle / "model" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in lora_state.items()} == {k: tuple(v.shape) for k, v in full_state.items()}

    texts = pd.read_csv(banking_test_csv)["text"].tolist()[:32]
    exported = {}
    for name, bundle in (("lora", lora_bundle), ("full", full_bundle)):
        manifest = export_bundle(bundle, tmp_path / name, texts=texts)
        assert manifest.components.onnx.parity["max_abs_diff"] <= 1e-4
        exported[name] = onnx.load(str(tmp_path / name / "onnx" / ONNX_FILE)).graph
    lora, full = exported["lora"], exported["full"]
    assert [n.op_type for n in lora.node] == [n.op_type for n in full.node]
    assert sorted(tuple(i.dims) for i in lora.initializer) == sorted(tuple(i.dims) for i in full.initializer)
    assert any(n.op_type == "Attention" for n in lora.node)  # fused like any full fine-tune
    onnx_proba = slm.load(tmp_path / "lora").predict_proba(texts, component="transformer")
    torch_proba = slm.load(lora_bundle).predict_proba(texts, component="transformer")
    np.testing.assert_allclose(onnx_proba, torch_proba, atol=1e-4)
