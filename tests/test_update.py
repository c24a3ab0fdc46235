"""``slm update``: class-incremental learning from feedback, the promotion gate, lineage and rollback.

The parent is the session's ``tiny_bundle`` (minilm-l6 trained on ten BANKING77 intents); feedback brings two
intents it has never seen, as real BANKING77 texts. Each test copies the parent so none changes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open

from tests.conftest import BANKING_INTENTS, DATA, require
from tests.test_cli import assert_one_line_error, slm

NEW_INTENTS = ["card_swallowed", "atm_support"]  # not among BANKING_INTENTS: new labels for the parent


def _new_intent_texts(per_intent: int, *, skip: int = 0) -> pd.DataFrame:
    frame = pd.read_csv(require(DATA / "banking77" / "train.csv"))
    frame = frame[frame["category"].isin(NEW_INTENTS)].sort_values(["category", "text"])
    return frame.groupby("category").nth(list(range(skip, skip + per_intent))).reset_index(drop=True)


@pytest.fixture
def parent(tiny_bundle, tmp_path) -> Path:
    copy = tmp_path / "served"
    shutil.copytree(tiny_bundle, copy)
    return copy


@pytest.fixture(scope="module")
def corrections(tmp_path_factory) -> Path:
    """A corrections file as a help desk would export it: text, the right label, what the model said."""
    rows = _new_intent_texts(16)
    path = tmp_path_factory.mktemp("feedback") / "corrections.csv"
    pd.DataFrame({"text": rows["text"], "label": rows["category"], "predicted": "card_arrival",
                  "verdict": "wrong"}).to_csv(path, index=False)  # fmt: skip
    return path


def _digest(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["manifest_digest"]["value"]


def test_new_intents_grow_the_head_and_the_update_is_promoted_with_its_lineage(parent, corrections, tmp_path) -> None:
    import slm
    from slm.training.gate import UpdateOptions

    before = _digest(parent)
    outcome = slm.api.update(parent, feedback=corrections, output=tmp_path / "updated",
                             options=UpdateOptions(epochs=2), show_progress=False)  # fmt: skip
    manifest = outcome.manifest
    assert manifest.labels == [*_labels(parent), *sorted(NEW_INTENTS)]  # the old order kept, new labels appended
    with safe_open(str(tmp_path / "updated" / "model" / "model.safetensors"), "pt") as weights:
        assert weights.get_tensor("head.weight").shape[0] == len(BANKING_INTENTS) + 2
    step = manifest.lineage[-1]
    assert step.step == "update" and step.parent_digest == before and step.parent == str(parent.resolve())
    record = manifest.training["update"]
    assert record["new_labels"] == sorted(NEW_INTENTS) and record["feedback"]["used_for_training"] == 24
    assert (
        record["comparison"]["promoted"] and outcome.comparison.candidate_feedback > outcome.comparison.parent_feedback
    )
    assert manifest.data["fingerprint"] == json.loads((parent / "manifest.json").read_text())["data"]["fingerprint"]
    unseen = _new_intent_texts(10, skip=16)  # never fed back
    bundle = slm.load(tmp_path / "updated")
    predicted = [p["label"] for p in bundle.predict(unseen["text"].tolist())]
    assert np.mean(np.array(predicted) == unseen["category"].to_numpy()) >= 0.6  # the parent scores 0 here
    assert _digest(parent) == before  # the parent is untouched


def _labels(bundle: Path) -> list[str]:
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    assert sorted(labels) == sorted(BANKING_INTENTS)
    return labels


def test_in_place_update_keeps_the_parent_and_rollback_restores_it(parent, corrections) -> None:
    before = _digest(parent)
    done = slm("update", parent, "--feedback", corrections, "-o", parent, "--epochs", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "Promoted" in done.stdout and "card_swallowed" in done.stdout
    assert _digest(parent) != before and _digest(parent.with_name("served.previous")) == before
    back = slm("rollback", parent)
    assert back.returncode == 0, back.stderr
    assert _digest(parent) == before


def test_a_candidate_that_does_not_improve_the_feedback_is_refused_and_nothing_changes(parent, tmp_path) -> None:
    import slm as slm_lib

    # Feedback that only confirms what the parent already gets right: the update cannot do better there.
    texts = pd.read_csv(require(DATA / "banking77" / "test.csv"))
    texts = texts[texts["category"].isin(BANKING_INTENTS)].groupby("category").tail(6)
    predicted = [p["label"] for p in slm_lib.load(parent).predict(texts["text"].tolist())]
    right = texts[np.array(predicted) == texts["category"].to_numpy()]
    path = tmp_path / "confirmations.csv"
    pd.DataFrame({"text": right["text"], "label": right["category"]}).to_csv(path, index=False)
    before = _digest(parent)
    done = slm("update", parent, "--feedback", path, "-o", tmp_path / "out", "--epochs", "1", "--quiet")
    assert done.returncode == 5, done.stderr
    assert_one_line_error(done, "not promoted", code=5)
    assert "held-out feedback 100.00% ->" in done.stderr and "original test split" in done.stderr
    assert not (tmp_path / "out").exists() and _digest(parent) == before


def test_bad_update_input_is_refused_in_one_line(untrained_bundle, tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    assert_one_line_error(slm("update", untrained_bundle, "--feedback", empty, "-o", tmp_path / "o"), "empty")
    missing = slm("update", untrained_bundle, "--feedback", tmp_path / "nope.csv", "-o", tmp_path / "o")
    assert_one_line_error(missing, "nope.csv")
    unsure = tmp_path / "unsure.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"], "verdict": ["unsure", "unsure"]}).to_csv(unsure, index=False)
    assert_one_line_error(slm("update", untrained_bundle, "--feedback", unsure, "-o", tmp_path / "o"), "no usable")
    fine = tmp_path / "fine.csv"
    pd.DataFrame({"text": ["my card got eaten", "atm kept it"], "label": ["card_swallowed"] * 2}).to_csv(
        fine, index=False
    )
    done = slm("update", untrained_bundle, "--feedback", fine, "-o", tmp_path / "o", "--tolerance", "-1")
    assert_one_line_error(done, "--tolerance")
    done = slm("update", untrained_bundle, "--feedback", fine, "-o", tmp_path / "o", "--feedback-repeats", "0")
    assert_one_line_error(done, "--feedback-repeats")
    assert not (tmp_path / "o").exists()


def test_feedback_repeats_in_training_and_the_ensemble_is_chosen_on_texts_no_model_trained_on(
    parent, corrections
) -> None:
    """The feedback's training rows are trained on ``feedback_repeats`` times an epoch and are in the split the
    epochs are chosen on, but not in the one the shipped component and the ensemble weight are chosen on."""
    from slm.api.updating import _feedback_dataset
    from slm.bundle.manifest import read_manifest
    from slm.pipeline import recorded_splits
    from slm.training.gate import UpdateOptions
    from slm.training.update import _plan

    manifest = read_manifest(parent)
    plan = _plan(manifest, _feedback_dataset(corrections, None), None, UpdateOptions(feedback_repeats=3, seed=0))
    original = recorded_splits(manifest, what="test")
    fed = [t for t, label in zip(plan.train.texts, plan.train.labels, strict=True) if label in NEW_INTENTS]
    assert len(fed) == 3 * 24 and all(fed.count(text) == 3 for text in fed)  # 16 a label, 4 held out: 12 x 2 x 3
    assert plan.selection.texts == original.validation.texts
    assert set(fed) <= set(plan.splits.validation.texts) and not set(fed) & set(plan.selection.texts)
    assert not set(plan.held_out.texts) & set(plan.train.texts)


def test_feedback_is_split_per_label_and_test_texts_never_train() -> None:
    from slm.data.dataset import TextDataset
    from slm.training.update_data import hold_out, usable_feedback

    ds = TextDataset(texts=["a", "b", "c", "d", "a", "e", "t1", " "], labels=["x", "x", "x", "x", "y", "z", "x", "x"])
    (texts, labels), dropped = usable_feedback(ds, {"t1"})
    assert dict(zip(texts, labels, strict=True)) == {"a": "y", "b": "x", "c": "x", "d": "x", "e": "z"}  # last wins
    assert dropped == {"repeated_or_empty": 2, "in_original_test": 1}  # "a" twice, the blank text; "t1" is in test
    train, held = hold_out((texts, labels), 0.25, seed=0)
    assert sorted(held[1]) == ["x"] and len(held[0]) == 1  # one of x's three; y and z (one text each) all train
    assert sorted(train[1]) == ["x", "x", "y", "z"] and not set(train[0]) & set(held[0])


def test_the_gate_needs_better_feedback_and_a_kept_test_split() -> None:
    from slm.training.gate import Comparison

    def gate(parent_original: float, candidate_original: float, parent_feedback: float, candidate_feedback: float):
        return Comparison(parent_original, candidate_original, parent_feedback, candidate_feedback, 100, 10, 0.5)

    assert gate(0.90, 0.896, 0.2, 0.9).promoted  # 0.4 points lost: within the tolerance
    assert not gate(0.90, 0.894, 0.2, 0.9).promoted  # 0.6 points lost
    assert not gate(0.90, 0.95, 0.9, 0.9).promoted  # feedback not improved
    assert "held-out feedback 90.00% -> 90.00% (10 texts)" in gate(0.9, 0.95, 0.9, 0.9).describe()


def test_an_exported_parent_gets_an_exported_update_that_runs_without_pytorch(exported, corrections, tmp_path) -> None:
    import slm
    from slm.runtime import load as load_runtime
    from slm.training.gate import UpdateOptions

    parent = tmp_path / "served-onnx"
    shutil.copytree(exported, parent)
    outcome = slm.api.update(parent, feedback=corrections, output=parent, options=UpdateOptions(epochs=1),
                             show_progress=False)  # fmt: skip
    assert outcome.previous == parent.with_name("served-onnx.previous")
    manifest = outcome.manifest
    assert manifest.components.onnx is not None and manifest.labels[-2:] == sorted(NEW_INTENTS)
    assert [step.step for step in manifest.lineage][-2:] == ["update", "export"]  # updated, then exported
    runtime = load_runtime(parent)
    assert runtime.backend == "onnx" and runtime.labels == manifest.labels
    unseen = _new_intent_texts(5, skip=16)
    assert {p["label"] for p in runtime.predict(unseen["text"].tolist())} & set(NEW_INTENTS)


def test_the_servers_feedback_file_is_read_as_a_database(tmp_path) -> None:
    from slm.feedback import read_feedback

    corrections = tmp_path / "corrections.csv"
    pd.DataFrame({"text": ["my card got eaten", "the atm kept my card"], "label": ["card_swallowed"] * 2,
                  "predicted": ["card_arrival"] * 2}).to_csv(corrections, index=False)  # fmt: skip
    db = tmp_path / "slm-feedback.sqlite"
    done = slm("feedback", "import", corrections, "--db", db, "--model", "tickets")
    assert done.returncode == 0, done.stderr
    records = read_feedback(db)  # a bare .sqlite path, as `slm update --feedback slm-feedback.sqlite` gives it
    assert sorted(r.text for r in records) == ["my card got eaten", "the atm kept my card"]
    assert {r.verdict for r in records} == {"wrong"} and {r.label for r in records} == {"card_swallowed"}
