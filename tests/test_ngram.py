"""Behaviour of the n-gram baseline on small slices of real data (BANKING77, CLINC150)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slm.errors import BundleError, DataError
from slm.models.ngram import ARRAYS_NAME, JSON_NAME, NgramClassifier
from tests.conftest import DATA, require

# CLINC150 intents grouped by their CLINC domain: each row is labelled {intent, domain}.
CLINC_DOMAINS = {
    "banking": ["transfer", "balance", "freeze_account", "pin_change"],
    "travel": ["book_flight", "lost_luggage", "carry_on", "travel_alert"],
    "kitchen": ["recipe", "calories", "cook_time", "restaurant_reservation"],
    "auto": ["gas", "tire_pressure", "oil_change_when", "jump_start"],
}


def _banking_slice(split: str, n_classes: int, per_class: int) -> tuple[list[str], np.ndarray]:
    """``per_class`` rows of each of the first ``n_classes`` BANKING77 intents (sorted by name)."""
    frame = pd.read_csv(require(DATA / "banking77" / f"{split}.csv"))
    intents = sorted(frame["category"].unique())[:n_classes]
    frame = frame[frame["category"].isin(intents)]
    frame = frame.groupby("category", group_keys=False).head(per_class)
    ids = {name: i for i, name in enumerate(intents)}
    return frame["text"].tolist(), frame["category"].map(ids).to_numpy()


def _clinc_multilabel(split: str, per_intent: int) -> tuple[list[str], np.ndarray, list[str]]:
    """CLINC150 rows with a 0/1 matrix over [intents..., domains..., 'unused'] (last column all zero)."""
    rows = json.loads(require(DATA / "clinc150" / "data_full.json").read_text())[split]
    intents = [i for group in CLINC_DOMAINS.values() for i in group]
    domain_of = {i: d for d, group in CLINC_DOMAINS.items() for i in group}
    names = intents + list(CLINC_DOMAINS) + ["unused"]
    col = {name: j for j, name in enumerate(names)}
    texts, targets, seen = [], [], dict.fromkeys(intents, 0)
    for text, intent in rows:
        if intent in seen and seen[intent] < per_intent:
            seen[intent] += 1
            y = np.zeros(len(names), dtype=np.int64)
            y[[col[intent], col[domain_of[intent]]]] = 1
            texts.append(text)
            targets.append(y)
    return texts, np.stack(targets), names


def _micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    tp = float((y_true & y_pred).sum())
    denom = float(y_true.sum() + y_pred.sum())
    return 2 * tp / denom if denom else 0.0


@pytest.fixture(scope="module")
def banking() -> tuple[NgramClassifier, list[str], np.ndarray]:
    texts, y = _banking_slice("train", n_classes=20, per_class=30)
    model = NgramClassifier().fit(texts, y)
    test_texts, test_y = _banking_slice("test", n_classes=20, per_class=10)
    return model, test_texts, test_y


def test_single_label_beats_chance_by_far(banking) -> None:
    model, texts, y = banking
    accuracy = float((model.predict(texts) == y).mean())
    assert accuracy > 0.75, f"accuracy {accuracy:.3f} on 20 classes (chance 0.05)"


def test_probabilities_are_float32_rows_summing_to_one(banking) -> None:
    model, texts, _ = banking
    probs = model.predict_proba(texts)
    assert probs.dtype == np.float32 and probs.shape == (len(texts), 20)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_absent_class_keeps_its_column() -> None:
    texts, y = _banking_slice("train", n_classes=6, per_class=15)
    keep = y != 2  # class 2 missing in the middle, classes 6 and 7 never seen
    model = NgramClassifier().fit([t for t, k in zip(texts, keep, strict=True) if k], y[keep], n_classes=8)
    probs = model.predict_proba(texts[:20])
    assert probs.shape == (20, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[:, [2, 6, 7]].max() < 1e-6


def test_binary_and_single_class_fits() -> None:
    texts, y = _banking_slice("train", n_classes=2, per_class=30)
    binary = NgramClassifier().fit(texts, y)
    assert float((binary.predict(texts) == y).mean()) > 0.95
    only_one = NgramClassifier().fit(texts[:5], np.zeros(5, dtype=int), n_classes=3)
    np.testing.assert_array_equal(only_one.predict(texts[-3:]), [0, 0, 0])


def test_save_load_round_trip_is_exact_and_pickle_free(banking, tmp_path: Path) -> None:
    model, texts, _ = banking
    written = model.save(tmp_path / "ngram")
    assert {p.name for p in written} == {JSON_NAME, ARRAYS_NAME}
    assert sorted(p.name for p in (tmp_path / "ngram").iterdir()) == sorted([ARRAYS_NAME, JSON_NAME])
    loaded = NgramClassifier.load(tmp_path / "ngram")
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize(
    "damage", ["missing_json", "missing_arrays", "truncated_arrays", "truncated_json", "vocab_shape"]
)
def test_load_of_damaged_model_raises_bundle_error(banking, tmp_path: Path, damage: str) -> None:
    model, _, _ = banking
    model.save(tmp_path)
    json_path, arrays_path = tmp_path / JSON_NAME, tmp_path / ARRAYS_NAME
    if damage == "missing_json":
        json_path.unlink()
    elif damage == "missing_arrays":
        arrays_path.unlink()
    elif damage == "truncated_arrays":
        arrays_path.write_bytes(arrays_path.read_bytes()[:1000])
    elif damage == "truncated_json":
        json_path.write_bytes(json_path.read_bytes()[:500])
    else:
        meta = json.loads(json_path.read_text())
        meta["char_vocabulary"] = meta["char_vocabulary"][:-1]
        json_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError) as info:
        NgramClassifier.load(tmp_path)
    assert "\n" not in str(info.value)


def test_multi_label_on_clinc_intents_and_domains() -> None:
    texts, y, names = _clinc_multilabel("train", per_intent=40)
    test_texts, test_y, _ = _clinc_multilabel("test", per_intent=15)
    model = NgramClassifier(multi_label=True).fit(texts, y)
    probs = model.predict_proba(test_texts)
    assert probs.shape == (len(test_texts), len(names)) and probs.dtype == np.float32
    assert probs[:, names.index("unused")].max() < 1e-3  # constant column: constant, tiny probability
    f1 = _micro_f1(test_y, model.predict(test_texts))
    all_ones = _micro_f1(test_y, np.ones_like(test_y))
    assert f1 > 0.8 and f1 > all_ones + 0.5, f"micro-F1 {f1:.3f} vs constant {all_ones:.3f}"


def test_bad_targets_raise_data_error() -> None:
    with pytest.raises(DataError):
        NgramClassifier().fit(["a b", "c d"], np.array([0]))
    with pytest.raises(DataError):
        NgramClassifier(multi_label=True).fit(["a b", "c d"], np.array([0, 1]))
