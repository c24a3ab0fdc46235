"""Differentially private training (``slm train --dp-epsilon``): accounting in the manifest, per-example
gradients with the embedding fix, and one-line refusals of what a private run cannot do."""

from __future__ import annotations

import json
import sys
import warnings

import pytest

from slm.errors import ConfigError
from slm.training.config import TrainConfig, check_private_run
from tests.conftest import KEPT_BUNDLE
from tests.test_cli import assert_one_line_error, slm

# A tiny private run: the head recipe on minilm-l6 over the ten-intent BANKING77 slice, few epochs.
TINY_DP = {"base_model": "minilm-l6", "max_length": 48, "seed": 7, "dp_epsilon": 8.0, "dp_epochs": 5}


# ---------------------------------------------------------------- refusals (fast)
@pytest.mark.parametrize(
    ("settings", "phrase"),
    [
        ({"dp_epsilon": 0}, "--dp-epsilon must be a positive number"),
        ({"dp_epsilon": -1.0}, "--dp-epsilon must be a positive number"),
        ({"dp_epsilon": float("inf")}, "--dp-epsilon must be a positive number"),
        ({"dp_epsilon": 8, "dp_delta": 2}, "--dp-delta must be between 0 and 1"),
        ({"dp_epsilon": 8, "dp_delta": 0}, "--dp-delta must be between 0 and 1"),
        ({"dp_epsilon": 8, "dp_max_grad_norm": 0}, "--dp-max-grad-norm must be a positive number"),
        ({"dp_epsilon": 8, "dp_recipe": "adalora"}, "--dp-recipe must be one of"),
        ({"dp_delta": 1e-5}, "need --dp-epsilon"),
    ],
)
def test_impossible_privacy_settings_are_refused(settings, phrase):
    with pytest.raises(ConfigError, match=phrase):
        TrainConfig(**settings)


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"unlabeled": "unlabeled.csv"}, "cannot self-train"),
        ({"resume": True}, "cannot --resume"),
        ({"config": TrainConfig(dp_epsilon=8, method="fewshot")}, "does not train --method fewshot"),
    ],
)
def test_private_runs_refuse_unsupported_combinations_before_reading_data(tmp_path, options, phrase):
    """Refused before the data (absent here) is read, let alone a model loaded."""
    import slm

    kwargs = {"config": TrainConfig(dp_epsilon=8), **options}
    with pytest.raises(ConfigError, match=phrase) as raised:
        slm.train(tmp_path / "absent.csv", output=tmp_path / "out", show_progress=False, **kwargs)
    assert "\n" not in str(raised.value)


def test_a_distributed_private_run_is_refused():
    with pytest.raises(ConfigError, match="trains in one process"):
        check_private_run(TrainConfig(dp_epsilon=8), unlabeled=False, resume=False, distributed=True)


def test_a_missing_opacus_names_the_privacy_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"install 'slm\[privacy\]'") as raised:
        check_private_run(TrainConfig(dp_epsilon=8), unlabeled=False, resume=False, distributed=False)
    assert "\n" not in str(raised.value)


def test_cli_refuses_a_zero_epsilon_in_one_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n")
    proc = slm("train", data, "-o", tmp_path / "out", "--dp-epsilon", "0")
    assert_one_line_error(proc, "--dp-epsilon must be a positive number")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- per-example gradients (fast)
def _tiny_classifier():
    """The kept tiny bundle's BERT architecture (2 layers of width 32, random weights), dropout off."""
    import torch
    from transformers import AutoConfig

    from slm.models.encoder import classifier_from_config

    config = AutoConfig.from_pretrained(KEPT_BUNDLE / "model")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    return classifier_from_config(config, 4, attn_implementation="eager")


def _per_example_grads(model):
    """Opacus's per-example gradients of a batch of three texts of different lengths, by parameter name."""
    import torch
    from opacus import GradSampleModule

    ids = torch.tensor([[101, 7, 9, 102, 0], [101, 5, 102, 0, 0], [101, 8, 9, 11, 102]])
    mask = (ids != 0).long()
    targets = torch.tensor([0, 2, 3])
    wrapped = GradSampleModule(model, loss_reduction="sum")  # the loss below sums over the batch
    wrapped.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        torch.nn.functional.cross_entropy(wrapped(ids, mask), targets, reduction="sum").backward()
    samples = {n: p.grad_sample.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    wrapped._close()
    return samples, (ids, mask, targets)


def test_bert_position_ids_break_per_example_gradients_without_the_fix():
    """The pitfall (opacus #841) is real here: trainable position embeddings get a gradient of batch size 1."""
    model = _tiny_classifier()
    model.encoder.get_input_embeddings().weight.requires_grad_(False)  # slm's usual freeze: word embeddings only
    samples, _ = _per_example_grads(model)
    assert samples["encoder.embeddings.position_embeddings.weight"].shape[0] == 1


@pytest.mark.parametrize("recipe", ["full", "lora"])
def test_per_example_gradients_are_each_examples_own_gradient_with_the_fix(recipe):
    import torch

    from slm.training.adapters import add_adapters
    from slm.training.private import freeze_embeddings

    model = _tiny_classifier()
    if recipe == "lora":
        add_adapters(model, "lora", TrainConfig(lora_dropout=0.0), total_steps=10)
    freeze_embeddings(model)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".embeddings." in n)
    samples, (ids, mask, targets) = _per_example_grads(model)
    assert samples and all(g.shape[0] == 3 for g in samples.values())
    if recipe == "lora":
        assert all("lora_" in n or n.startswith("head.") for n in samples)
    for row in range(3):  # each example alone, by plain autograd
        model.zero_grad()
        one = slice(row, row + 1)
        torch.nn.functional.cross_entropy(model(ids[one], mask[one]), targets[one], reduction="sum").backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                torch.testing.assert_close(samples[name][row], param.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- a real private run (slow)
@pytest.fixture(scope="module")
def dp_bundle(tmp_path_factory, banking_csv, banking_test_csv):
    import slm

    out = tmp_path_factory.mktemp("dp") / "dp8"
    slm.train(banking_csv, output=out, test=banking_test_csv, config=TrainConfig(**TINY_DP), show_progress=False)
    return out


@pytest.mark.slow
def test_a_private_run_records_its_accounting_in_the_manifest(dp_bundle):
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(dp_bundle)
    privacy = manifest.privacy
    assert privacy is not None and privacy.dp
    assert 0 < privacy.epsilon_spent <= privacy.epsilon_target == 8.0
    n_train = manifest.data["n_train"]
    assert privacy.delta == pytest.approx(1 / n_train)
    assert privacy.steps >= privacy.epochs == 5  # at least one Poisson batch an epoch
    assert privacy.noise_multiplier > 0 and privacy.sample_rate <= 1
    assert privacy.accountant in ("prv", "rdp") and privacy.recipe == "head"
    assert privacy.not_private  # what the guarantee does not cover is written down
    raw = json.loads((dp_bundle / "manifest.json").read_text())
    assert raw["privacy"]["epsilon_spent"] == privacy.epsilon_spent


@pytest.mark.slow
def test_a_private_bundle_ships_no_ngram_model_but_reports_the_baseline(dp_bundle):
    from slm.bundle.manifest import read_manifest

    manifest = read_manifest(dp_bundle)
    assert manifest.components.names() == ["transformer"]
    assert manifest.ensemble is None and manifest.default_component == "transformer"
    assert not (dp_bundle / "ngram").exists()
    assert not any(rel.startswith("ngram") for rel in manifest.files)
    assert "ngram_baseline" in manifest.metrics["test"]  # scored for comparison
    report = (dp_bundle / "report" / "report.md").read_text()
    spent = f"{manifest.privacy.epsilon_spent:.3f}"
    assert "## Differential privacy" in report and f"epsilon {spent}" in report
    assert "not private and not in the bundle" in report


@pytest.mark.slow
def test_export_keeps_the_privacy_record_and_compress_refuses_learning_steps(dp_bundle, tmp_path):
    from slm.api import compress
    from slm.bundle.manifest import read_manifest
    from slm.compression.export import export_bundle

    export_bundle(dp_bundle, tmp_path / "onnx")
    assert read_manifest(tmp_path / "onnx").privacy == read_manifest(dp_bundle).privacy
    with pytest.raises(ConfigError, match="--prune-layers would learn from the training texts"):
        compress(dp_bundle, tmp_path / "pruned", prune_layers=3)


@pytest.mark.slow
def test_update_refuses_a_private_bundle(dp_bundle, banking_csv, tmp_path):
    from slm.api.updating import update

    with pytest.raises(ConfigError, match="trained with differential privacy"):
        update(dp_bundle, feedback=banking_csv, output=tmp_path / "updated", show_progress=False)


@pytest.mark.slow
def test_a_private_lora_run_trains_the_encoder_adapters(tmp_path, banking_csv, banking_test_csv):
    import slm

    # A minute of DP-SGD: a few noisy steps (2 to 6 examples a second on 2 shared cores), enough to account.
    config = TrainConfig(**{**TINY_DP, "dp_recipe": "lora", "dp_epochs": 1, "dp_batch_size": 32, "max_minutes": 1})
    bundle = slm.train(banking_csv, output=tmp_path / "lora", test=banking_test_csv, config=config, show_progress=False)
    privacy = bundle.manifest.privacy
    assert privacy is not None and privacy.recipe == "lora"
    assert privacy.steps >= 1 and 0 < privacy.epsilon_spent <= 8.0
    assert bundle.manifest.training["parameters"]["trainable_share"] < 0.1  # adapters and head only
