"""Ensemble weighting and per-class decision shifts on real probabilities (finance tweets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from slm.models.ensemble import combine, shift_priors, tune_prior_shift, tune_weight
from slm.models.ngram import NgramClassifier
from tests.conftest import DATA, require


@pytest.fixture(scope="module")
def fin_probabilities() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two real, different n-gram models' probabilities on held-out finance tweets (imbalanced, 3 classes)."""
    frame = pd.read_csv(require(DATA / "fin_tweets_sentiment" / "sent_train.csv")).sample(3000, random_state=0)
    texts, y = frame["text"].astype(str).tolist(), frame["label"].astype(int).to_numpy()
    word = NgramClassifier(char_ngrams=(1, 1), max_features=2000).fit(texts[:2000], y[:2000], n_classes=3)
    full = NgramClassifier().fit(texts[:2000], y[:2000], n_classes=3)
    return word.predict_proba(texts[2000:]), full.predict_proba(texts[2000:]), y[2000:]


def macro_f1(y: np.ndarray):
    return lambda p: float(f1_score(y, p.argmax(1), average="macro"))


def test_tuned_weight_is_at_least_as_good_as_either_model(fin_probabilities) -> None:
    weak, strong, y = fin_probabilities
    score = macro_f1(y)
    weight, best = tune_weight(weak, strong, score)
    assert 0.0 <= weight <= 1.0
    assert best >= max(score(weak), score(strong)) - 1e-12
    assert best == pytest.approx(score(combine(weak, strong, weight)))


def test_tied_weights_take_the_middle_of_the_plateau(fin_probabilities) -> None:
    _, strong, y = fin_probabilities
    # the same model twice: every weight scores the same, so no end of the range is preferred
    weight, best = tune_weight(strong, strong, macro_f1(y))
    assert weight == 0.5
    assert best == pytest.approx(macro_f1(y)(strong))


def test_prior_shift_raises_macro_f1_on_imbalanced_classes(fin_probabilities) -> None:
    _, strong, y = fin_probabilities
    score = macro_f1(y)
    shift = tune_prior_shift(strong, score)
    shifted = shift_priors(strong, shift)
    np.testing.assert_allclose(shifted.sum(axis=1), 1.0, atol=1e-5)
    assert score(shifted) >= score(strong)
    if np.any(shift):
        assert score(shifted) > score(strong) + 0.002
        # the minority classes (bearish 0, bullish 1) are pushed up relative to neutral (2)
        assert shift[2] <= max(shift[0], shift[1])


def test_prior_shift_is_refused_when_it_cannot_help(fin_probabilities) -> None:
    _, strong, y = fin_probabilities
    perfect = np.eye(3, dtype=np.float32)[y]
    assert not np.any(tune_prior_shift(perfect, macro_f1(y)))
    assert shift_priors(strong, None) is strong


def test_ensemble_is_shipped_only_when_it_wins_on_validation(fin_probabilities) -> None:
    from slm.training.run import _default_component

    weak, strong, y = fin_probabilities
    score = macro_f1(y)
    assert score(strong) > score(weak)
    # a blend that is no better than the transformer alone: the simpler model ships
    assert _default_component(True, score, {"transformer": strong, "ensemble": strong}) == "transformer"
    # a blend that helps on validation ships
    assert _default_component(True, score, {"transformer": weak, "ensemble": strong}) == "ensemble"
    assert _default_component(False, score, {"transformer": weak, "ensemble": strong}) == "transformer"
