"""Structured pruning + distillation recovery on a real (tiny) bundle and real BANKING77 data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from slm.compression.distill import agreement, distillation_loss
from slm.compression.prune import (
    FfnActivationStats,
    _load_data,
    count_parameters,
    prune_bundle,
    prune_classifier,
    save_model,
    select_layers,
    spread_layers,
    top_neurons,
)
from slm.errors import BundleError, ConfigError, DataError
from slm.models.encoder import classifier_from_config
from slm.models.ensemble import probabilities
from slm.pipeline import DataSource
from slm.runtime.bundle import Bundle
from slm.training.batching import encode_texts
from slm.training.component import TransformerComponent
from slm.training.trainer import predict_logits

FAST = {"epochs": 2, "seed": 3, "show_progress": False}


def _teacher(bundle_path):
    bundle = Bundle(bundle_path)
    return bundle, TransformerComponent(bundle.path, bundle.manifest.components.transformer, len(bundle.labels))


def _kl(teacher_logits, student_proba) -> float:
    """Mean KL(teacher || student) over texts, from the teacher's logits and the student's probabilities."""
    p = probabilities(teacher_logits, False).astype(np.float64)
    q = np.clip(student_proba.astype(np.float64), 1e-12, 1.0)
    return float((p * (np.log(np.clip(p, 1e-12, 1.0)) - np.log(q))).sum(axis=1).mean())


def _slice(csv):
    frame = pd.read_csv(csv)
    return frame["text"].tolist(), frame["category"].tolist()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_bundle, banking_csv):
    """6 -> 3 layers with half the FFN neurons, recovered for two epochs; built once for the module."""
    out = tmp_path_factory.mktemp("pruned") / "student"
    manifest = prune_bundle(
        tiny_bundle, out, DataSource(banking_csv, "text", "category"), layers=3, ffn_keep=0.5, alpha=1.0, **FAST
    )
    return out, manifest


# -- pure functions ---------------------------------------------------------------------------
def test_layer_selection_spreads_and_validates():
    assert spread_layers(6, 3) == [1, 3, 5]
    assert spread_layers(6, 2) == [2, 5]
    assert spread_layers(6, 1) == [5]
    assert spread_layers(6, 5) == [1, 2, 3, 4, 5]
    assert spread_layers(12, 4) == [2, 5, 8, 11]
    assert spread_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    for n in range(1, 13):
        for k in range(1, n + 1):
            assert len(set(spread_layers(n, k))) == k and spread_layers(n, k)[-1] == n - 1
    assert select_layers(6, [4, 0, 2]) == [0, 2, 4]
    for bad in (0, 6, 7, -1, [], [0, 0], [0, 6], [0, 1, 2, 3, 4, 5], "3", 2.5, True):
        with pytest.raises(ConfigError):
            select_layers(6, bad)
    assert select_layers(6, 6, allow_all=True) == list(range(6))


def test_distillation_loss_is_zero_at_the_teacher_and_mixes_hard_loss():
    torch.manual_seed(0)
    teacher = torch.randn(8, 5)
    targets = torch.randint(0, 5, (8,))
    same = distillation_loss(teacher.clone(), teacher, targets, multi_label=False, temperature=2.0, alpha=1.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 5)
    assert distillation_loss(other, teacher, targets, multi_label=False, temperature=2.0, alpha=1.0).item() > 0.01
    hard = torch.nn.functional.cross_entropy(other, targets)
    pure_hard = distillation_loss(other, teacher, targets, multi_label=False, temperature=2.0, alpha=0.0)
    assert pure_hard.item() == pytest.approx(hard.item(), rel=1e-6)
    multi = (torch.rand(8, 5) > 0.5).float()
    zero = distillation_loss(teacher.clone(), teacher, multi, multi_label=True, temperature=3.0, alpha=1.0)
    assert zero.item() == pytest.approx(0.0, abs=1e-5)
    assert distillation_loss(other, teacher, multi, multi_label=True, temperature=3.0, alpha=1.0).item() > 0.001


# -- the student model ------------------------------------------------------------------------
def test_pruned_classifier_reloads_exactly(tiny_bundle, banking_csv, tmp_path):
    _, part = _teacher(tiny_bundle)
    teacher = part.model
    texts, _ = _slice(banking_csv)
    encoded = encode_texts(part.tokenizer, texts[:64], part.max_length)
    stats = FfnActivationStats(teacher, [1, 3, 5])
    with stats.collecting():
        predict_logits(teacher, encoded, part.pad_id)
    neurons = top_neurons(stats.importance(), 384)
    student = prune_classifier(teacher, [1, 3, 5], neurons)
    assert teacher.config.num_hidden_layers == 6  # the teacher is untouched
    assert student.config.num_hidden_layers == 3 and student.config.intermediate_size == 384
    assert count_parameters(student) < count_parameters(teacher)

    save_model(student, tmp_path / "model")
    config = AutoConfig.from_pretrained(tmp_path / "model")
    restored = classifier_from_config(config, len(part.model.head.bias))
    restored.load_state_dict(load_file(str(tmp_path / "model" / "model.safetensors")))
    np.testing.assert_array_equal(
        predict_logits(student, encoded, part.pad_id), predict_logits(restored, encoded, part.pad_id)
    )


# -- the whole step ---------------------------------------------------------------------------
def test_pruned_bundle_is_smaller_loads_and_predicts(pruned, tiny_bundle, banking_test_csv):
    out, manifest = pruned
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["intermediate_size"] == 768
    pruning = manifest.compression["pruning"]
    assert pruning["layers_kept"] == [1, 3, 5]
    assert pruning["parameters"]["student"] < pruning["parameters"]["teacher"]
    assert manifest.lineage[-1].step == "prune"

    bundle = Bundle(out)  # verifies every file hash
    texts, labels = _slice(banking_test_csv)
    for component in ("transformer", "ensemble"):
        proba = bundle.predict_proba(texts, component=component)
        accuracy = np.mean([bundle.labels[i] == y for i, y in zip(proba.argmax(1), labels, strict=True)])
        assert accuracy > 0.5, (component, accuracy)  # chance is 0.1 with ten intents
    assert (out / "ngram").is_dir() and not (out / "report").exists()
    teacher = Bundle(tiny_bundle).manifest
    assert manifest.ensemble == teacher.ensemble
    # The ensemble stays the default only if it still beats the pruned transformer on the validation split.
    record = (manifest.compression or {}).get("default_component")
    if teacher.default_component == "ensemble":
        assert record["step"] == "pruned" and record["texts"] == teacher.data["n_validation"]
        won = record["ensemble"] > record["transformer"]
        assert manifest.default_component == record["component"] == ("ensemble" if won else "transformer")
    else:
        assert record is None and manifest.default_component == teacher.default_component


def test_choosing_the_default_again_with_the_unpruned_teacher_reproduces_training(tiny_bundle, tmp_path):
    """The teacher as its own 'pruned' student, in a copy that ships the ensemble: choosing again on the recorded
    validation split must come to training's decision (same split, same rule, the same n-gram probabilities)."""
    from slm.bundle.derive import derive_bundle
    from slm.compression.prune import _default_after_pruning, _open_teacher

    def ship_ensemble(_, manifest):
        manifest.default_component = "ensemble"
        return manifest

    trained = Bundle(tiny_bundle).manifest
    shipped = tmp_path / "ships-ensemble"
    derive_bundle(tiny_bundle, shipped, ship_ensemble, step="set-default")
    source, teacher_part = _open_teacher(shipped)
    choice = _default_after_pruning(shipped, source.manifest, teacher_part, teacher_part.model)
    assert choice.component == trained.default_component
    assert choice.record["texts"] == trained.data["n_validation"] and choice.record["step"] == "pruned"
    assert choice.ensemble is not None and choice.ensemble["drop_points"] == 0.0  # the same transformer


def test_manifest_never_labels_teacher_numbers_as_the_students(pruned, tiny_bundle):
    _, manifest = pruned
    teacher_manifest = Bundle(tiny_bundle).manifest
    metrics = manifest.metrics
    assert "test" not in metrics and manifest.recommendation is None
    assert "recommendation" not in json.loads((pruned[0] / "manifest.json").read_text())
    assert metrics["parent_test"] == teacher_manifest.metrics["test"]
    assert metrics["evaluated_on"] == "validation"
    assert set(metrics["validation"]["teacher"]) >= {"accuracy", "macro_f1"}
    assert set(metrics["validation"]["student"]) >= {"accuracy", "macro_f1"}
    distillation = manifest.compression["distillation"]
    assert distillation["temperature"] == 2.0 and distillation["alpha"] == 1.0
    assert 1 <= distillation["epochs_run"] <= 2 and distillation["wall_time_s"] > 0


def test_distillation_moves_the_student_towards_the_teacher(pruned, tiny_bundle, banking_csv, banking_test_csv):
    """alpha=1 trains on the teacher's soft labels only: on unseen texts the student must get closer to it."""
    out, manifest = pruned
    texts, _ = _slice(banking_test_csv)
    bundle, part = _teacher(tiny_bundle)
    part_labels = bundle.labels
    encoded = encode_texts(part.tokenizer, texts, part.max_length)
    teacher_logits = predict_logits(part.model, encoded, part.pad_id)
    # The same student before recovery: same layers, same importance-ranked neurons as prune_bundle.
    train, _ = _load_data(DataSource(banking_csv, "text", "category"), part_labels, False, 0.1, FAST["seed"])
    stats = FfnActivationStats(part.model, [1, 3, 5])
    with stats.collecting():
        predict_logits(part.model, encode_texts(part.tokenizer, train.texts, part.max_length), part.pad_id)
    before = prune_classifier(part.model, [1, 3, 5], top_neurons(stats.importance(), 768))
    logits_before = predict_logits(before, encoded, part.pad_id)
    proba_after = Bundle(out).predict_proba(texts, component="transformer")
    kl_before = _kl(teacher_logits, probabilities(logits_before, False))
    kl_after = _kl(teacher_logits, proba_after)
    agree_before = agreement(logits_before, teacher_logits, False)
    agree_after = agreement(np.log(proba_after), teacher_logits, False)
    print(f"KL to teacher {kl_before:.4f} -> {kl_after:.4f}; agreement {agree_before:.3f} -> {agree_after:.3f}")
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)
    assert agree_after >= agree_before, (agree_before, agree_after)
    recorded = manifest.metrics["validation"]["agreement"]
    assert recorded["after_recovery"] > recorded["before_recovery"]


def test_bad_arguments_raise_config_error(tiny_bundle, banking_csv, tmp_path):
    data = DataSource(banking_csv, "text", "category")
    out = tmp_path / "out"
    for kwargs in (
        {"layers": 0},
        {"layers": 6},
        {"layers": [0, 9]},
        {"ffn_keep": 0.0},
        {"ffn_keep": 1.5},
        {"heads_keep": 0.5},
        {"heads_keep": 0.0},
        {"alpha": 1.5},
        {"temperature": 0.0},
        {"epochs": 0},
        {"val_size": 0.0},
    ):
        with pytest.raises(ConfigError):
            prune_bundle(tiny_bundle, out, data, show_progress=False, **kwargs)
    with pytest.raises(ConfigError, match="input bundle"):
        prune_bundle(tiny_bundle, tiny_bundle, data, show_progress=False)
    with pytest.raises(BundleError):
        prune_bundle(tmp_path / "missing", out, data, show_progress=False)
    assert not out.exists()


def test_previous_output_survives_a_failure(pruned, tiny_bundle, tmp_path):
    out = tmp_path / "existing"
    shutil.copytree(pruned[0], out)
    before = (out / "manifest.json").read_text()
    frame = pd.read_csv(pruned[1].compression["distillation"]["data"]["source"])
    frame.loc[frame.index[:3], "category"] = "not_a_bundle_label"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError, match="unknown to the bundle"):
        prune_bundle(tiny_bundle, out, DataSource(bad, "text", "category"), **FAST)
    assert (out / "manifest.json").read_text() == before
    Bundle(out)  # still complete and verified
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing")]


@pytest.mark.slow(reason="trains a model: a teacher, then distils a student")
def test_multi_label_bundle_prunes_with_bernoulli_distillation(tmp_path):
    """A real multi-label CLINC150 bundle: BCE + per-label soft targets, thresholds re-tuned for the student."""
    import json as _json
    import random

    import slm
    from slm.training.config import TrainConfig
    from tests.conftest import DATA, require
    from tests.test_multilabel import INTENTS, _multi_intent_rows

    data = _json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    pairs = [(t, i) for t, i in data["train"] if i in INTENTS]
    chosen = [p for intent in INTENTS for p in [q for q in pairs if q[1] == intent][:20]]
    frame = pd.DataFrame(_multi_intent_rows(chosen, 200, random.Random(0))).sample(frac=1.0, random_state=0)
    path = tmp_path / "train.jsonl"
    frame.to_json(path, orient="records", lines=True)
    teacher = slm.train(
        path,
        output=tmp_path / "teacher",
        label_sep="|",
        show_progress=False,
        config=TrainConfig(epochs=2, batch_size=16, max_length=48, seed=1),
    )
    source = DataSource(path, label_sep="|")
    manifest = prune_bundle(teacher.path, tmp_path / "student", source, layers=2, epochs=1, show_progress=False)
    assert manifest.task == "multi_label"
    assert manifest.compression["pruning"]["layers_kept"] == [2, 5]
    assert "micro_f1" in manifest.metrics["validation"]["student"]
    assert manifest.thresholds["transformer"] != teacher.manifest.thresholds["transformer"]
    student = Bundle(tmp_path / "student")
    proba = student.predict_proba(["what is my balance and also when is my bill due"], component="transformer")
    assert proba.shape == (1, len(INTENTS)) and np.all((proba >= 0) & (proba <= 1))
    assert isinstance(student.predict(["freeze my account"])[0]["label"], list)
