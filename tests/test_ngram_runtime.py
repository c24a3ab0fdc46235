"""The runtime's numpy n-gram predictor against the fitted scikit-learn model, on real data and odd texts.

Each model is a real NgramClassifier fitted on a slice of a real dataset (under a second), saved, and read
back both ways: ``NgramClassifier.load(...).predict_proba`` (scikit-learn, SciPy) is the reference that
``slm.runtime.ngram.NgramPredictor`` must match to 1e-6 without importing either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import slm.runtime.ngram as runtime_ngram
from slm.errors import BundleError
from slm.models.ngram import JSON_NAME, LEGACY_TOKEN_PATTERN, NgramClassifier, settings_for
from slm.runtime.ngram import NgramPredictor
from tests.conftest import DATA, banking_frame, require
from tests.test_ngram import _clinc_multilabel

# Texts that stress the analyzers: nothing, no word character, unicode case rules (Turkish dotted I and
# Greek final sigma lowercase to more or other characters), emoji, whitespace runs (tabs and newlines:
# one stays as it is, two or more become one space), a long text, mixed scripts and cashtags.
EDGE_TEXTS = [
    "",
    " ",
    "?!...,;",
    "ÉCOLE",
    "İstanbul İSTANBUL",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ",
    "card 💳 not arrived 😡😡",
    "tab\tseparated\twords",
    "two\t\ttabs and\n\nnewlines\r\n end",
    "  leading and trailing  ",
    "straße STRASSE ǅemal ﬁnance",
    "my card has not arrived " * 400,
    "$AAPL up 3% on 外卖 news",
    "a",
    "e\u0301cole cafe\u0301 zero\u200bwidth",
]


def _both(model: NgramClassifier, directory: Path) -> tuple[NgramClassifier, NgramPredictor]:
    model.save(directory)
    return NgramClassifier.load(directory), NgramPredictor.load(directory)


def _assert_same(reference: NgramClassifier, predictor: NgramPredictor, texts: list[str]) -> None:
    expected, got = reference.predict_proba(texts), predictor.predict_proba(texts)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(texts), reference.n_classes)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predictor.decision_function(texts), reference.decision_function(texts), atol=1e-9)


@pytest.fixture(scope="module")
def banking(tmp_path_factory) -> tuple[NgramClassifier, NgramPredictor, list[str]]:
    train = banking_frame("train", per_class=30)
    labels = sorted(train["category"].unique())
    model = NgramClassifier().fit(train["text"].tolist(), train["category"].map(labels.index).to_numpy())
    reference, predictor = _both(model, tmp_path_factory.mktemp("ngram") / "banking")
    return reference, predictor, banking_frame("test", per_class=12)["text"].tolist()


def test_banking77_probabilities_match_scikit_learn(banking) -> None:
    reference, predictor, texts = banking
    _assert_same(reference, predictor, texts + EDGE_TEXTS)
    assert (predictor.predict_proba(texts).argmax(1) == reference.predict(texts)).all()


def test_edge_texts_one_at_a_time_and_texts_without_known_ngrams(banking) -> None:
    reference, predictor, _ = banking
    for text in EDGE_TEXTS:
        _assert_same(reference, predictor, [text])
    unknown = ["", "ΩΩΩ ЖЖЖ", "😀"]  # no n-gram of the vocabulary: the logits are the intercepts
    np.testing.assert_allclose(predictor.decision_function(unknown), np.tile(reference.intercept, (3, 1)), atol=0)
    assert predictor.predict_proba([]).shape == (0, reference.n_classes)


def test_batches_and_weight_chunks_do_not_change_the_result(banking, monkeypatch) -> None:
    reference, predictor, texts = banking
    expected = predictor.predict_proba(texts + EDGE_TEXTS)
    monkeypatch.setattr(runtime_ngram, "BATCH_TEXTS", 7)  # many batches, one text per batch boundary case
    monkeypatch.setattr(runtime_ngram, "GATHER_ELEMENTS", 3 * reference.n_classes)  # 3 n-grams per product
    np.testing.assert_allclose(predictor.predict_proba(texts + EDGE_TEXTS), expected, atol=1e-12)


def test_chinese_waimai_with_cjk_tokens_and_char_ngrams(tmp_path: Path) -> None:
    frame = pd.read_csv(require(DATA / "waimai_10k" / "waimai_10k.csv"), dtype=str, keep_default_na=False)
    frame = frame.sample(frac=1.0, random_state=0)
    train = pd.concat([frame[frame["label"] == label].head(150) for label in ("0", "1")])
    texts = train["review"].tolist()
    settings = settings_for(texts)
    assert settings == {"char_ngrams": (1, 3)}  # single ideographs are features
    model = NgramClassifier(**settings).fit(texts, train["label"].astype(int).to_numpy())
    reference, predictor = _both(model, tmp_path)
    held_out = frame.iloc[-200:]["review"].tolist()
    odd = ["很快，好吃！！　全角空格　和ＡＢＣ", "味道\n\n不错 😋"]  # full-width space and letters, emoji
    _assert_same(reference, predictor, held_out + EDGE_TEXTS + odd)


def test_multi_label_sigmoids_match(tmp_path: Path) -> None:
    texts, y, names = _clinc_multilabel("train", per_intent=25)
    test_texts, _, _ = _clinc_multilabel("test", per_intent=5)
    reference, predictor = _both(NgramClassifier(multi_label=True).fit(texts, y), tmp_path)
    assert predictor.multi_label and predictor.n_classes == len(names)
    _assert_same(reference, predictor, test_texts + EDGE_TEXTS)


@pytest.mark.parametrize(
    "settings",
    [
        {"char_analyzer": "char_wb", "char_ngrams": (1, 5)},  # short words end scikit-learn's n loop early
        {"word_ngrams": (1, 3), "char_ngrams": (3, 3), "token_pattern": LEGACY_TOKEN_PATTERN},
        {"word_ngrams": (2, 2), "char_ngrams": (1, 1)},
    ],
    ids=["char_wb", "trigrams-legacy-pattern", "bigrams-only"],
)
def test_other_analyzer_settings_match(settings: dict, tmp_path: Path) -> None:
    train = banking_frame("train", per_class=15)
    labels = sorted(train["category"].unique())
    model = NgramClassifier(**settings).fit(train["text"].tolist(), train["category"].map(labels.index).to_numpy())
    reference, predictor = _both(model, tmp_path)
    _assert_same(reference, predictor, banking_frame("test", per_class=5)["text"].tolist() + EDGE_TEXTS)


def test_unusable_settings_are_a_bundle_error(banking, tmp_path: Path) -> None:
    reference, _, _ = banking
    reference.save(tmp_path)
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    for key, value in (("char_analyzer", "bytes"), ("token_pattern", "(unclosed"), ("word_ngrams", [2, 1])):
        (tmp_path / JSON_NAME).write_text(json.dumps({**meta, "params": {**meta["params"], key: value}}))
        with pytest.raises(BundleError) as info:
            NgramPredictor.load(tmp_path)
        assert "\n" not in str(info.value)


FRESH = """
import json, sys
from slm.runtime import load
model = load(sys.argv[1], threads=1)
texts = json.loads(sys.argv[2])
out = {c: model.predict_proba(texts, component=c).tolist() for c in ("ngram", "ensemble")}
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy", "torch", "transformers"))
print(json.dumps(out))
"""


def test_fresh_runtime_process_computes_the_ensemble_without_scikit_learn(untrained_exported) -> None:
    """A new interpreter loads an exported bundle and predicts with its n-gram and ensemble components."""
    from slm.bundle.manifest import read_manifest
    from slm.models.ensemble import ensemble_probabilities

    texts = ["my card has not arrived yet", "how do I change my PIN?", "", "ÉCOLE\t\tİstanbul 😀"]
    done = subprocess.run(
        [sys.executable, "-c", FRESH, str(untrained_exported), json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    reference = NgramClassifier.load(untrained_exported / "ngram").predict_proba(texts)
    np.testing.assert_allclose(np.asarray(result["ngram"], dtype=np.float32), reference, atol=1e-6)
    from slm.runtime import load

    manifest = read_manifest(untrained_exported)
    assert manifest.ensemble is not None
    transformer = load(untrained_exported, threads=1).predict_proba(texts, component="transformer")
    expected = ensemble_probabilities(
        transformer, reference, manifest.ensemble.transformer_weight, manifest.ensemble.log_prior_shift
    )
    np.testing.assert_allclose(np.asarray(result["ensemble"], dtype=np.float32), expected, atol=1e-5)


def test_slm_predict_with_the_ensemble_on_the_runtime_install(untrained_exported, tmp_path: Path) -> None:
    """`slm predict --component ensemble` where scikit-learn, SciPy, pandas and PyTorch are not installed."""
    from slm.runtime import load
    from tests.test_install import NOT_IN_RUNTIME, run_cli

    assert {"sklearn", "scipy", "torch"} <= set(NOT_IN_RUNTIME)
    texts = ["my card has not arrived", "how do I change my PIN?", "ÉCOLE\t\tİstanbul"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    for component in ("ensemble", "ngram"):
        result = run_cli(["predict", str(untrained_exported), str(tmp_path / "in.jsonl"), "--component", component],
                         NOT_IN_RUNTIME)  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        model = load(untrained_exported, threads=1)
        expected = model.predict_proba(texts, component=component)
        got = np.array([[row["probabilities"][label] for label in model.labels] for row in rows])
        np.testing.assert_allclose(got, expected, atol=1e-5)
