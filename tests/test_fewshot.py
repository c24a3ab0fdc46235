"""Few-shot (contrastive tuning + linear head) and head-only training, `--method auto`, on real BANKING77 slices.

The sampler, the loss and the method choice are checked on synthetic arrays (they are pure
functions); everything that trains uses the real minilm-l6 model on 8 texts per intent.
"""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import slm
from slm.cli import app
from slm.training.config import TrainConfig
from slm.training.fewshot import ClassBalancedSampler, positive_weights, supervised_contrastive_loss
from slm.training.method import FEWSHOT_MAX_PER_CLASS, choose_method
from tests.conftest import banking_frame

runner = CliRunner()
PER_CLASS = 8  # a few-shot slice: 8 texts per intent, 1 of them held out for validation
VAL_SIZE = 0.125
SEED = 7


# ---------------------------------------------------------------- ClassBalancedSampler


def _single_label(counts: list[int]) -> np.ndarray:
    targets = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return np.random.default_rng(0).permutation(targets)


def _check_single_label_batch(batch: np.ndarray, targets: np.ndarray, classes: int, per_class: int) -> np.ndarray:
    assert len(batch) == classes * per_class
    present, counts = np.unique(targets[batch], return_counts=True)
    assert len(present) == classes, counts
    assert np.all(counts == per_class), counts
    return present


def test_sampler_batches_are_class_balanced_and_cover_every_class() -> None:
    targets = _single_label([12, 9, 30, 7, 15, 8, 20, 10, 11, 6, 14])  # 11 classes, uneven sizes
    sampler = ClassBalancedSampler(targets, classes_per_batch=4, examples_per_class=5, seed=3)
    assert sampler.batches_per_epoch() == math.ceil(11 / 4)
    for _ in range(3):
        batches = sampler.epoch()
        assert len(batches) == 3
        seen = set()
        for batch in batches:
            present = _check_single_label_batch(batch, targets, 4, 5)
            seen.update(present.tolist())
            for k in present:  # every class here has >= 5 members: drawn without replacement
                rows = batch[targets[batch] == k]
                assert len(np.unique(rows)) == len(rows)
        assert seen == set(range(11))  # one pass over the classes (the last batch topped up with others)
    # deterministic for a seed, different for another
    first = ClassBalancedSampler(targets, 4, 5, seed=3).epoch()
    same = ClassBalancedSampler(targets, 4, 5, seed=3).epoch()
    other = ClassBalancedSampler(targets, 4, 5, seed=4).epoch()
    assert all(np.array_equal(a, b) for a, b in zip(first, same, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_sampler_scales_to_many_classes_without_pair_lists() -> None:
    n_classes, per_class = 2_000, 50
    targets = _single_label([per_class] * n_classes)  # 100,000 rows
    tracemalloc.start()
    started = time.perf_counter()
    sampler = ClassBalancedSampler(targets, classes_per_batch=16, examples_per_class=4, seed=0)
    batches = sampler.epoch()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(batches) == sampler.batches_per_epoch() == math.ceil(n_classes / 16)
    for batch in batches:
        _check_single_label_batch(batch, targets, 16, 4)
    assert len({int(k) for b in batches for k in np.unique(targets[b])}) == n_classes
    # the same-class pairs alone would be 2,000 * 50 * 49 = 4.9M index pairs (~78 MB as int64)
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert seconds < 10, seconds


def test_sampler_with_fewer_classes_than_a_batch_holds_all_of_them() -> None:
    targets = _single_label([10, 3, 7])
    sampler = ClassBalancedSampler(targets, classes_per_batch=6, examples_per_class=4, seed=1)
    assert sampler.batches_per_epoch() == 1
    for batch in sampler.epoch() + sampler.epoch():
        _check_single_label_batch(batch, targets, 3, 8)  # all 3 classes, 24 // 3 texts each: still 24


def test_sampler_batch_size_stays_when_the_classes_do_not_divide_it() -> None:
    targets = _single_label([8] * 10)
    sampler = ClassBalancedSampler(targets, classes_per_batch=16, examples_per_class=4, seed=0)
    batches = sampler.epoch()
    assert {len(b) for b in batches} == {64}
    for batch in batches:  # 64 = 10 classes x 6 + 4 classes with one more
        counts = sorted(np.bincount(targets[batch], minlength=10).tolist())
        assert counts == [6] * 6 + [7] * 4


def test_sampler_samples_singleton_classes_with_replacement() -> None:
    targets = _single_label([1, 6, 1, 5])
    sampler = ClassBalancedSampler(targets, classes_per_batch=4, examples_per_class=3, seed=2)
    singletons = {int(np.flatnonzero(targets == k)[0]) for k in (0, 2)}
    for batch in sampler.epoch():
        _check_single_label_batch(batch, targets, 4, 3)
        for row in singletons:
            assert np.count_nonzero(batch == row) == 3  # the only member, repeated


def test_sampler_supports_multi_label_targets() -> None:
    rng = np.random.default_rng(0)
    n, labels = 120, 7
    targets = np.zeros((n, labels), dtype=np.float32)
    targets[np.arange(n), rng.integers(0, labels - 1, n)] = 1  # label 6 is never used
    extra = rng.random(n) < 0.3
    targets[np.flatnonzero(extra), rng.integers(0, labels - 1, extra.sum())] = 1
    sampler = ClassBalancedSampler(targets, classes_per_batch=2, examples_per_class=4, seed=0)
    assert len(sampler.members) == 6  # the empty label is dropped
    assert sampler.batches_per_epoch() == 3
    for _ in range(2):
        batches = sampler.epoch()
        assert len(batches) == 3
        shared_over_epoch = set()
        for batch in batches:
            assert len(batch) == 8
            chunks = batch.reshape(2, 4)  # one chunk of members per chosen label
            shared = [set(np.flatnonzero(targets[chunk].min(axis=0))) for chunk in chunks]
            assert all(shared), "every chunk's texts carry a common label"
            shared_over_epoch.update(*shared)
        assert shared_over_epoch == set(range(6))


# ---------------------------------------------------------------- supervised contrastive loss


def _reference_supcon(x: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """SupCon written out with loops: anchors without a positive do not count."""
    sims = x @ x.T / temperature
    per_anchor = []
    for i in range(len(x)):
        others = [a for a in range(len(x)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        log_denominator = np.log(np.sum(np.exp(sims[i, others])))
        per_anchor.append(-np.mean([sims[i, p] - log_denominator for p in positives]))
    return float(np.mean(per_anchor))


def _clustered(n_classes: int, per_class: int, dim: int = 16, noise: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    x = centres[y] + noise * rng.normal(size=(len(y), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


def test_contrastive_loss_matches_the_definition_and_prefers_clusters() -> None:
    x, y = _clustered(5, 4)
    y = y.copy()
    y[-1] = 5  # one anchor has no positive at all
    emb = torch.tensor(x, requires_grad=True)
    loss = supervised_contrastive_loss(emb, torch.as_tensor(y), temperature=0.1)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(_reference_supcon(x, y, 0.1), rel=1e-4)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    shuffled = np.random.default_rng(1).permutation(y)
    assert not np.array_equal(shuffled, y)
    wrong = supervised_contrastive_loss(torch.tensor(x), torch.as_tensor(shuffled), temperature=0.1)
    assert torch.isfinite(wrong)
    assert loss.item() < wrong.item() - 1.0, (loss.item(), wrong.item())


def test_contrastive_loss_without_positive_pairs_is_zero_not_nan() -> None:
    x, y = _clustered(6, 1)  # every class has one member: only self-pairs would be positive
    emb = torch.tensor(x, requires_grad=True)
    loss = supervised_contrastive_loss(emb, torch.as_tensor(y), temperature=0.05)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_positive_weights_for_multi_label_are_jaccard_overlaps() -> None:
    t = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]])
    w = positive_weights(t)
    expected = torch.tensor([[1, 0.5, 0, 1], [0.5, 1, 0, 0.5], [0, 0, 1, 0], [1, 0.5, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(w, expected)
    assert torch.equal(positive_weights(torch.tensor([2, 0, 2])), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))


# ---------------------------------------------------------------- choose_method


def _per_class(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(c, k) for k, c in enumerate(counts)])


def test_choose_method_head_for_one_example_per_class() -> None:
    choice = choose_method(np.arange(10), 10, TrainConfig())
    assert choice.method == "head"
    assert "median of 1 " in choice.reason
    choice = choose_method(_per_class([1, 2, 1, 2]), 4, TrainConfig())  # median 1.5
    assert choice.method == "head" and "1.5" in choice.reason


def test_choose_method_fewshot_for_few_examples_per_class() -> None:
    choice = choose_method(_per_class([8] * 10), 10, TrainConfig())
    assert choice.method == "fewshot" and "median of 8 " in choice.reason
    # labels that never occur do not pull the median down
    choice = choose_method(_per_class([9] * 10), 40, TrainConfig())
    assert choice.method == "fewshot" and "median of 9 " in choice.reason
    at_limit = choose_method(_per_class([FEWSHOT_MAX_PER_CLASS] * 5), 5, TrainConfig())
    assert at_limit.method == "fewshot" and str(FEWSHOT_MAX_PER_CLASS) in at_limit.reason
    # multi-label: positives per label
    multi = np.zeros((60, 4), dtype=np.float32)
    for k in range(4):
        multi[k * 15 : k * 15 + 12, k] = 1
    choice = choose_method(multi, 4, TrainConfig())
    assert choice.method == "fewshot" and "median of 12 " in choice.reason


def test_choose_method_full_for_many_examples_unless_the_budget_is_short() -> None:
    targets = _per_class([200] * 10)  # 2,000 examples
    choice = choose_method(targets, 10, TrainConfig(epochs=5))
    assert choice.method == "full" and "median of 200 " in choice.reason
    just_over = choose_method(_per_class([FEWSHOT_MAX_PER_CLASS + 1] * 5), 5, TrainConfig())
    assert just_over.method == "full"
    # 2,000 x 5 epochs at the measured speed is over a minute: a one-minute budget gets a head
    short = choose_method(targets, 10, TrainConfig(epochs=5, max_minutes=1))
    assert short.method == "head"
    assert "2,000" in short.reason and "--max-minutes 1" in short.reason
    generous = choose_method(targets, 10, TrainConfig(epochs=5, max_minutes=60))
    assert generous.method == "full"


# ---------------------------------------------------------------- end to end on BANKING77


@pytest.fixture(scope="module")
def fewshot_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fewshot-data") / "banking_8.csv"
    banking_frame("train", per_class=PER_CLASS).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def auto_run(fewshot_data, banking_test_csv, tmp_path_factory) -> tuple[Path, str]:
    """`slm train --method auto` on 8 texts per intent: picks few-shot and trains it (4 contrastive passes)."""
    out = tmp_path_factory.mktemp("fewshot") / "auto"
    args = [
        "train",
        str(fewshot_data),
        "-o",
        str(out),
        "--test",
        str(banking_test_csv),
        "--val-size",
        str(VAL_SIZE),
        "--method",
        "auto",
        "--contrastive-epochs",
        "4",
        "--max-length",
        "48",
        "--seed",
        str(SEED),
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, " ".join(result.output.split())


@pytest.fixture(scope="module")
def head_bundle(fewshot_data, banking_test_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fewshot") / "head"
    slm.train(
        fewshot_data,
        output=out,
        test=banking_test_csv,
        val_size=VAL_SIZE,
        show_progress=False,
        config=TrainConfig(method="head", max_length=48, seed=SEED),
    )
    return out


def _test_texts(path: Path) -> tuple[list[str], list[str]]:
    frame = pd.read_csv(path)
    return frame["text"].tolist(), frame["category"].tolist()


def test_auto_picks_fewshot_and_says_why(auto_run) -> None:
    out, output = auto_run
    assert "method: fewshot" in output
    # 8 per intent minus the validation text: a median of 7 examples per class
    assert "median of 7 labelled examples per class" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["method_choice"]["method"] == "fewshot"
    assert "median of 7 " in manifest["training"]["method_choice"]["reason"]
    assert manifest["training"]["config"]["method"] == "auto"


def test_fewshot_end_to_end(auto_run, head_bundle, banking_test_csv) -> None:
    out, _ = auto_run
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["training"]
    assert training["method"] == "fewshot"
    assert manifest["data"]["n_train"] == 70 and manifest["data"]["n_validation"] == 10
    assert training["fewshot"]["contrastive_steps"] == 4  # 10 classes fit one batch: one step per pass
    history = json.loads((out / "report" / "report.json").read_text())["training"]["history"]
    losses = [h["contrastive_loss"] for h in history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert training["fewshot"]["head_C"] in {g["C"] for g in training["fewshot"]["head_grid"]}
    # the whole encoder was tuned (embeddings frozen) and the head fitted
    assert 0.3 < training["parameters"]["trainable_share"] < 0.9
    accuracy = manifest["metrics"]["test"]["transformer"]["accuracy"]
    assert accuracy >= 0.75, accuracy  # ten intents: chance is 0.1; measured 0.96
    # contrastive tuning must not damage the encoder: at least as good as a head on the untouched one
    head_accuracy = json.loads((head_bundle / "manifest.json").read_text())["metrics"]["test"]["transformer"]
    assert accuracy >= head_accuracy["accuracy"] - 0.05, (accuracy, head_accuracy["accuracy"])
    spec = manifest["components"]["transformer"]
    assert spec["normalize"] is True
    assert json.loads((out / "model" / "config.json").read_text())["slm_normalize_pooled"] is True
    # reloaded from disk, the model reproduces the accuracy measured at training time
    texts, labels = _test_texts(banking_test_csv)
    bundle = slm.load(out)
    proba = bundle.predict_proba(texts, component="transformer")
    predicted = [bundle.labels[i] for i in proba.argmax(1)]
    assert np.mean(np.array(predicted) == np.array(labels)) == pytest.approx(accuracy, abs=1e-9)
    np.testing.assert_allclose(proba, slm.load(out).predict_proba(texts, component="transformer"), atol=1e-6)


def test_fewshot_onnx_export_keeps_the_normalisation(auto_run, banking_test_csv, tmp_path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from slm.compression.export import export_bundle
    from slm.models.encoder import classifier_from_config
    from slm.models.ensemble import probabilities

    out, _ = auto_run
    texts, _ = _test_texts(banking_test_csv)
    texts = texts[:48]
    manifest = export_bundle(out, tmp_path / "onnx", texts=texts)
    assert manifest.components.onnx.parity["max_abs_diff"] <= 1e-4
    exported = slm.load(tmp_path / "onnx")
    assert exported.backend == "onnx"
    torch_proba = slm.load(out).predict_proba(texts, component="transformer")
    onnx_proba = exported.predict_proba(texts, component="transformer")
    np.testing.assert_allclose(onnx_proba, torch_proba, atol=1e-4)
    # the check can fail: without the unit-length step the same weights give other probabilities
    config = AutoConfig.from_pretrained(out / "model")
    model = classifier_from_config(config, 10)
    model.load_state_dict(load_file(str(out / "model" / "model.safetensors")))
    model.eval()
    assert model.normalize
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    enc = tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.inference_mode():
        emb = model.embed(enc["input_ids"], enc["attention_mask"])
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(texts)), atol=1e-5, rtol=0)
        normalised = probabilities(model(enc["input_ids"], enc["attention_mask"]).numpy(), False)
        model.normalize = False
        raw = probabilities(model(enc["input_ids"], enc["attention_mask"]).numpy(), False)
    np.testing.assert_allclose(normalised, onnx_proba, atol=1e-4)
    assert np.abs(raw - onnx_proba).max() > 0.05


def test_head_only_leaves_the_encoder_untouched(head_bundle) -> None:
    from slm.models.registry import resolve_base_model

    manifest = json.loads((head_bundle / "manifest.json").read_text())
    training = manifest["training"]
    assert training["method"] == "head"
    assert training["fewshot"]["contrastive_steps"] == 0 and training["epochs_run"] == 0
    assert training["parameters"]["trainable"] == 384 * 10 + 10  # only the head
    assert manifest["components"]["transformer"]["normalize"] is True
    state = load_file(str(head_bundle / "model" / "model.safetensors"))
    base = load_file(str(resolve_base_model("minilm-l6").path / "model.safetensors"))
    encoder_keys = [k for k in state if k.startswith("encoder.")]
    assert len(encoder_keys) > 90
    for key in encoder_keys:
        assert torch.equal(state[key], base[key.removeprefix("encoder.")]), key
    # the head was fitted (a fresh head is N(0, 0.02) with zero bias)
    assert state["head.weight"].shape == (10, 384)
    assert state["head.weight"].std() > 0.1 and state["head.bias"].abs().max() > 0
    accuracy = manifest["metrics"]["test"]["transformer"]["accuracy"]
    assert accuracy >= 0.6, accuracy  # chance is 0.1; measured 0.96
