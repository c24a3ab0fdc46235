"""Self-training with unlabelled text: pseudo-label selection, the round record, and refused inputs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

import slm
from slm.cli import app
from slm.errors import ConfigError
from slm.training.config import TrainConfig
from slm.training.self_training import REFUSE_Z, SHARE_STEP, pseudo_label, significantly_worse
from tests.conftest import DATA, banking_frame, require

runner = CliRunner()
ROUNDS = 2
SEED = 7


# ---------------------------------------------------------------- pseudo_label


def _proba(predicted: list[int], confidence: list[float], n_labels: int) -> np.ndarray:
    """Rows whose argmax is ``predicted`` with that probability, the rest spread evenly."""
    rows = []
    for k, c in zip(predicted, confidence, strict=True):
        row = np.full(n_labels, (1 - c) / (n_labels - 1))
        row[k] = c
        rows.append(row)
    return np.asarray(rows)


def test_pseudo_label_takes_an_equal_quota_per_class_most_confident_first() -> None:
    rng = np.random.default_rng(0)
    n, n_labels = 60, 3
    predicted = rng.integers(0, n_labels, n)
    predicted[:30] = 0  # class 0 is predicted far more often than the others
    confidence = rng.uniform(0.4, 0.99, n)
    proba = _proba(predicted.tolist(), confidence.tolist(), n_labels)
    for share in (0.1, 0.25, 0.5):
        rows, labels, floor = pseudo_label(proba, share)
        quota = math.ceil(share * n / n_labels)
        assert np.all(np.diff(rows) > 0)  # sorted, no repeats
        np.testing.assert_array_equal(labels, proba[rows].argmax(1))
        for k in range(n_labels):
            members = np.flatnonzero(predicted == k)
            taken = rows[labels == k]
            assert len(taken) == min(quota, len(members))
            rest = np.setdiff1d(members, taken)
            if len(rest):
                assert confidence[taken].min() >= confidence[rest].max()
        assert floor == pytest.approx(proba[rows].max(1).min())
    small = pseudo_label(proba, 0.1)
    larger = pseudo_label(proba, 0.5)
    assert set(small[0]) <= set(larger[0]) and larger[2] <= small[2]  # the bar drops as the quota grows


def test_pseudo_label_share_one_takes_everything_when_predictions_are_balanced() -> None:
    predicted = [0, 1, 2, 3] * 5
    confidence = np.linspace(0.3, 0.95, 20).tolist()
    proba = _proba(predicted, confidence, 4)
    rows, labels, floor = pseudo_label(proba, 1.0)
    np.testing.assert_array_equal(rows, np.arange(20))
    np.testing.assert_array_equal(labels, predicted)
    assert floor == pytest.approx(0.3)


def test_pseudo_label_caps_a_dominant_class_at_its_quota() -> None:
    predicted = [0] * 8 + [1, 2]
    confidence = np.linspace(0.5, 0.9, 10).tolist()
    proba = _proba(predicted, confidence, 3)
    rows, labels, _ = pseudo_label(proba, 1.0)
    # quota ceil(10 / 3) = 4: the 4 most confident of class 0, and the single row of each other class
    assert np.bincount(labels, minlength=3).tolist() == [4, 1, 1]
    assert set(rows[labels == 0].tolist()) == {4, 5, 6, 7}


def test_a_round_is_refused_only_when_it_loses_significantly_more_texts_than_it_gains() -> None:
    reference = np.array([True] * 60 + [False] * 17)
    same = reference.copy()
    assert significantly_worse(reference, same) == (False, 0, 0)  # no disagreement, no evidence
    swapped = reference.copy()
    swapped[:6], swapped[60:66] = False, True  # six lost, six gained: a wash
    assert significantly_worse(reference, swapped) == (False, 6, 6)
    four_lost = reference.copy()
    four_lost[:4] = False  # 4 > 2 * sqrt(4) is false: four texts of 77 can be chance
    assert significantly_worse(reference, four_lost) == (False, 4, 0)
    five_lost = reference.copy()
    five_lost[:5] = False  # 5 > 2 * sqrt(5) = 4.47
    assert significantly_worse(reference, five_lost) == (True, 5, 0)
    assert REFUSE_Z == 2.0


def test_auto_chooses_the_method_again_for_a_self_training_round() -> None:
    from slm.training.run import _round_method

    labelled = np.repeat(np.arange(10), 8)  # 8 per class: few-shot
    grown = np.repeat(np.arange(10), 70)  # 70 per class after pseudo-labelling
    auto = TrainConfig(method="auto")
    assert _round_method("fewshot", auto, labelled, len(labelled), 10) == "fewshot"  # round 0
    assert _round_method("fewshot", auto, grown, len(labelled), 10) == "full"
    fixed = TrainConfig(method="fewshot")  # a method the user chose stays for every round
    assert _round_method("fewshot", fixed, grown, len(labelled), 10) == "fewshot"


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def banking_8(tmp_path_factory) -> tuple[Path, Path]:
    """8 labelled texts per intent, and 100 other texts of the same intents without their labels."""
    folder = tmp_path_factory.mktemp("self-training-data")
    labelled = banking_frame("train", per_class=8)
    more = banking_frame("train", per_class=18)  # the same shuffle: the first 8 of each intent are the labelled
    unlabelled = more[~more["text"].isin(labelled["text"])]
    assert len(unlabelled) == 100
    labelled.to_csv(folder / "labelled.csv", index=False)
    unlabelled[["text"]].to_csv(folder / "unlabelled.csv", index=False)
    return folder / "labelled.csv", folder / "unlabelled.csv"


@pytest.fixture(scope="module")
def self_trained(banking_8, banking_test_csv, tmp_path_factory):
    labelled, unlabelled = banking_8
    return slm.train(
        labelled,
        output=tmp_path_factory.mktemp("self-training") / "bundle",
        test=banking_test_csv,
        val_size=0.125,
        unlabeled=unlabelled,
        show_progress=False,
        config=TrainConfig(method="head", self_training_rounds=ROUNDS, max_length=48, seed=SEED),
    )


def test_self_training_record_is_consistent(self_trained) -> None:
    manifest = self_trained.manifest
    record = manifest.training["self_training"]
    assert record["unlabeled_texts"] == 100
    rounds = record["rounds"]
    assert rounds[0]["round"] == 0 and rounds[0]["kept"] is True and rounds[0]["pseudo_labels"] == 0
    assert record["val_macro_f1_labelled_only"] == rounds[0]["val_macro_f1"]
    assert 2 <= len(rounds) <= ROUNDS + 1
    best = rounds[0]["val_macro_f1"]
    for r, entry in enumerate(rounds[1:], start=1):
        assert entry["round"] == r and entry["method"] == "head"
        quota = math.ceil(min(1.0, r * SHARE_STEP) * 100 / 10)
        assert 0 < entry["pseudo_labels"] <= quota * 10
        assert 0 < entry["min_confidence"] <= 1
        # kept unless it loses significantly more validation texts than it gains against the best kept model
        lost, gained = entry["val_texts_lost"], entry["val_texts_gained"]
        assert 0 <= lost + gained <= 10  # one validation text per intent
        assert entry["kept"] == (lost - gained <= REFUSE_Z * math.sqrt(lost + gained)), entry
        if entry["kept"]:
            best = entry["val_macro_f1"]
        else:
            assert r == len(rounds) - 1, "self-training stops at the first round that is not kept"
    assert record["kept_rounds"] == sum(e["kept"] for e in rounds[1:])
    kept = [e for e in rounds[1:] if e["kept"]]
    if kept:  # the n-gram side learnt the kept round's pseudo-labels too; the labelled-only baseline is recorded
        assert record["ngram_refit_texts"] == manifest.data["n_train"] + kept[-1]["pseudo_labels"]
        assert 0.1 < record["ngram_labelled_only"]["accuracy"] <= 1
    else:
        assert "ngram_refit_texts" not in record
    assert record["val_macro_f1"] == best
    assert manifest.training["method"] == "head"
    assert manifest.metrics["test"]["transformer"]["accuracy"] >= 0.6  # ten intents: chance is 0.1


def test_self_trained_bundle_is_the_best_round(self_trained) -> None:
    """The shipped model scores the recorded best validation macro-F1 (not the last round's)."""
    from slm.pipeline import recorded_validation

    validation = recorded_validation(self_trained.manifest)
    assert len(validation) == 10
    bundle = slm.load(self_trained.path)
    proba = bundle.predict_proba(validation.texts, component="transformer")
    targets = validation.targets(bundle.labels)
    score = f1_score(targets, proba.argmax(1), labels=np.arange(10), average="macro", zero_division=0)
    assert score == pytest.approx(self_trained.manifest.training["self_training"]["val_macro_f1"], abs=1e-5)


def test_info_shows_the_rounds_and_the_refitted_ngram_side(self_trained) -> None:
    record = self_trained.manifest.training["self_training"]
    result = runner.invoke(app, ["info", str(self_trained.path)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert f"self-training kept {record['kept_rounds']} of {len(record['rounds']) - 1} round(s)" in output
    assert ("n-gram side refitted on" in output) == (record["kept_rounds"] > 0)


# ---------------------------------------------------------------- refused inputs


def _one_line_error(result) -> str:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and message.count("\n") == 0, message
    return message


def test_cli_refuses_resume_with_unlabeled(banking_8, tmp_path) -> None:
    labelled, unlabelled = banking_8
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["train", str(labelled), "-o", str(out), "--method", "head", "--unlabeled", str(unlabelled), "--resume"]
    )
    message = _one_line_error(result)
    assert "--resume" in message and "--unlabeled" in message
    assert not out.exists()


def test_cli_refuses_a_missing_unlabeled_file(banking_8, banking_test_csv, tmp_path) -> None:
    labelled, _ = banking_8
    missing = tmp_path / "nowhere.csv"
    out = tmp_path / "out"
    args = ["train", str(labelled), "-o", str(out), "--test", str(banking_test_csv), "--val-size", "0.125"]
    result = runner.invoke(app, [*args, "--method", "head", "--unlabeled", str(missing)])
    message = _one_line_error(result)
    assert "nowhere.csv" in message and "not found" in message
    assert not out.exists()


def test_self_training_refuses_multi_label_data(banking_8, tmp_path) -> None:
    _, unlabelled = banking_8
    data = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())
    intents = ["balance", "bill_due", "freeze_account", "pin_change"]
    pairs = [(t, i) for t, i in data["train"] if i in intents]
    chosen = [p for i in intents for p in [q for q in pairs if q[1] == i][:10]]
    rng = random.Random(0)
    rows = [{"text": t, "labels": i} for t, i in chosen]
    for _ in range(20):
        (a, ia), (b, ib) = rng.sample(chosen, 2)
        if ia != ib:
            rows.append({"text": f"{a.rstrip('?. ')} and also {b}", "labels": f"{ia}|{ib}"})
    path = tmp_path / "multi.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="single-label"):
        slm.train(
            path,
            output=out,
            label_sep="|",
            unlabeled=unlabelled,
            show_progress=False,
            config=TrainConfig(method="head", max_length=32, seed=SEED),
        )
    assert not out.exists()
