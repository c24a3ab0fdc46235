"""The strong n-gram baseline: TF-IDF word + character n-grams and logistic regression.

Every fine-tuned model is compared against this. It saves to JSON (vocabularies, params) and
safetensors (idf, weights) only: no pickle (the files: :mod:`slm.models.ngram_format`). Prediction
is plain numpy/scipy from the stored arrays, so a loaded model reproduces the fitted model's
probabilities exactly; the torch-free runtime computes the same probabilities with numpy alone
(:mod:`slm.runtime.ngram`, checked against this class to 1e-6).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import save as st_save
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from slm.errors import BundleError, DataError
from slm.fileio import write_bytes_atomic
from slm.models.ngram_format import (
    ARRAYS_NAME,
    CJK_CLASS,
    FORMAT,
    FORMAT_VERSION,
    JSON_NAME,
    LEGACY_TOKEN_PATTERN,
    TOKEN_PATTERN,
    read_ngram_files,
    sigmoid,
)

__all__ = ["ARRAYS_NAME", "JSON_NAME", "LEGACY_TOKEN_PATTERN", "TOKEN_PATTERN", "NgramClassifier", "settings_for"]

CJK = re.compile(CJK_CLASS)
# Character n-grams for mostly-CJK corpora: single ideographs carry meaning (measured on waimai_10k and ECDT).
CJK_CHAR_NGRAMS = (1, 3)
# Logit given to a class never seen in fit: its probability is ~e^-50 of the others.
ABSENT_LOGIT = -50.0
# A multi-label column with one value gets this probability floor/ceiling instead of exactly 0/1.
CONSTANT_EPS = 1e-4


class NgramClassifier:
    """TF-IDF word (1-2) + char (2-4) n-grams -> logistic regression; single- or multi-label.

    Defaults were measured on BANKING77 (test acc 91.6%), Symptom2Disease and finance tweets.
    """

    def __init__(
        self,
        *,
        multi_label: bool = False,
        C: float = 10.0,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 4),
        char_analyzer: str = "char",
        max_features: int | None = 300_000,
        min_df: int = 1,
        class_weight: str | None = None,
        max_iter: int = 1000,
        seed: int = 0,
        token_pattern: str = TOKEN_PATTERN,
    ) -> None:
        self.multi_label = multi_label
        self.C = float(C)
        self.word_ngrams = (int(word_ngrams[0]), int(word_ngrams[1]))
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.char_analyzer = char_analyzer
        self.max_features = max_features
        self.min_df = min_df
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.seed = seed
        self.token_pattern = token_pattern
        self.n_classes: int | None = None
        self.word_vocabulary: list[str] = []
        self.char_vocabulary: list[str] = []
        self.word_idf = np.zeros(0, dtype=np.float64)
        self.char_idf = np.zeros(0, dtype=np.float64)
        self.coef = np.zeros((0, 0), dtype=np.float32)
        self.intercept = np.zeros(0, dtype=np.float32)
        self._counters: tuple[CountVectorizer | None, CountVectorizer | None] | None = None

    # ------------------------------------------------------------------ params
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {
            "multi_label": self.multi_label,
            "C": self.C,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
            "char_analyzer": self.char_analyzer,
            "max_features": self.max_features,
            "min_df": self.min_df,
            "class_weight": self.class_weight,
            "max_iter": self.max_iter,
            "seed": self.seed,
            "token_pattern": self.token_pattern,
        }

    # ------------------------------------------------------------------ fit
    def fit(self, texts: Sequence[str], y: np.ndarray, n_classes: int | None = None) -> NgramClassifier:
        """Fit on ``texts``; ``y`` is class ids ``(n,)`` or, multi-label, a 0/1 matrix ``(n, k)``."""
        texts = list(texts)
        y = np.asarray(y)
        self._check_targets(texts, y)
        x = self._fit_features(texts)
        if self.multi_label:
            self.n_classes = int(y.shape[1])
            coef, intercept = self._fit_one_vs_rest(x, y.astype(np.int64))
        else:
            y = y.astype(np.int64)
            self.n_classes = int(n_classes) if n_classes is not None else int(y.max()) + 1
            if y.max() >= self.n_classes:
                raise DataError(f"class id {int(y.max())} is out of range for n_classes={self.n_classes}")
            coef, intercept = self._fit_multinomial(x, y)
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)
        return self

    def _check_targets(self, texts: list[str], y: np.ndarray) -> None:
        if len(texts) == 0:
            raise DataError("cannot fit the n-gram baseline on zero texts")
        if y.shape[0] != len(texts):
            raise DataError(f"{len(texts)} texts but {y.shape[0]} labels")
        if self.multi_label and y.ndim != 2:
            raise DataError("multi-label targets must be a 0/1 matrix of shape (n, k)")
        if not self.multi_label and y.ndim != 1:
            raise DataError("single-label targets must be class ids of shape (n,)")
        if not self.multi_label and y.min() < 0:
            raise DataError("single-label class ids must be >= 0")

    def _fit_features(self, texts: list[str]) -> sp.csr_matrix:
        """Learn both vocabularies and idf vectors; return the training feature matrix."""
        limits = (self.max_features, self.min_df)
        self.word_vocabulary, self.word_idf = _fit_tfidf(texts, self._word_kwargs(), *limits)
        self.char_vocabulary, self.char_idf = _fit_tfidf(texts, self._char_kwargs(), *limits)
        if not self.word_vocabulary and not self.char_vocabulary:
            raise DataError("the training texts contain no word or character n-grams")
        self._counters = None
        return self._features(list(texts))

    def _logreg(self) -> LogisticRegression:
        return LogisticRegression(
            C=self.C, max_iter=self.max_iter, class_weight=self.class_weight, random_state=self.seed
        )

    def _fit_multinomial(self, x: sp.csr_matrix, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Softmax weights with one row per class; classes absent from ``y`` get ABSENT_LOGIT."""
        k, d = int(self.n_classes or 0), x.shape[1]
        coef = np.zeros((k, d), dtype=np.float64)
        intercept = np.full(k, ABSENT_LOGIT, dtype=np.float64)
        present = np.unique(y)
        if len(present) == 1:
            intercept[present[0]] = 0.0
            return coef, intercept
        model = self._logreg().fit(x, y)
        if len(present) == 2:  # sklearn stores one binary row: split it into a symmetric softmax pair
            w, b = model.coef_[0], model.intercept_[0]
            coef[present[0]], coef[present[1]] = -w / 2, w / 2
            intercept[present[0]], intercept[present[1]] = -b / 2, b / 2
        else:
            coef[model.classes_] = model.coef_
            intercept[model.classes_] = model.intercept_
        return coef, intercept

    def _fit_one_vs_rest(self, x: sp.csr_matrix, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One independent sigmoid per label; a constant column gets a constant probability."""
        k, d = y.shape[1], x.shape[1]
        coef = np.zeros((k, d), dtype=np.float64)
        intercept = np.zeros(k, dtype=np.float64)
        for j in range(k):
            column = y[:, j]
            if np.unique(column).size < 2:
                p = float(np.clip(column.mean(), CONSTANT_EPS, 1 - CONSTANT_EPS))
                intercept[j] = np.log(p / (1 - p))
                continue
            model = self._logreg().fit(x, column)
            coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        return coef, intercept

    # ------------------------------------------------------------------ features / predict
    def _word_kwargs(self) -> dict[str, Any]:
        return {
            "analyzer": "word",
            "ngram_range": self.word_ngrams,
            "token_pattern": self.token_pattern,
            "lowercase": True,
        }

    def _char_kwargs(self) -> dict[str, Any]:
        return {"analyzer": self.char_analyzer, "ngram_range": self.char_ngrams, "lowercase": True}

    def _count_vectorizers(self) -> tuple[CountVectorizer | None, CountVectorizer | None]:
        if self._counters is None:
            word = _counter(self.word_vocabulary, self._word_kwargs())
            char = _counter(self.char_vocabulary, self._char_kwargs())
            self._counters = (word, char)
        return self._counters

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF features (sublinear tf, idf, l2 per block) hstacked as [word | char]."""
        self._require_fitted()
        return self._features(list(texts))

    def _features(self, texts: list[str]) -> sp.csr_matrix:
        word, char = self._count_vectorizers()
        blocks = [
            _tfidf_block(word, self.word_idf, texts),
            _tfidf_block(char, self.char_idf, texts),
        ]
        return sp.hstack(blocks, format="csr", dtype=np.float64)

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits ``(n, k)`` in float64."""
        x = self.transform(texts)
        return np.asarray(x @ self.coef.T.astype(np.float64)) + self.intercept.astype(np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax (single-label) or per-label sigmoid (multi-label) probabilities, float32 ``(n, k)``."""
        logits = self.decision_function(texts)
        if self.multi_label:
            probs = sigmoid(logits)
        else:
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
        return probs.astype(np.float32)

    def predict(self, texts: Sequence[str], threshold: float = 0.5) -> np.ndarray:
        """Class ids ``(n,)``, or a 0/1 matrix ``(n, k)`` (probability >= threshold) for multi-label."""
        probs = self.predict_proba(texts)
        if self.multi_label:
            return (probs >= threshold).astype(np.int64)
        return probs.argmax(axis=1).astype(np.int64)

    def _require_fitted(self) -> None:
        if self.n_classes is None:
            raise RuntimeError("NgramClassifier is not fitted")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> list[Path]:
        """Write ``ngram.json`` and ``ngram.safetensors`` atomically into ``directory``."""
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": self.get_params(),
            "n_classes": self.n_classes,
            "word_vocabulary": self.word_vocabulary,
            "char_vocabulary": self.char_vocabulary,
        }
        arrays: dict[str, np.ndarray] = {
            "word_idf": self.word_idf.astype(np.float64),
            "char_idf": self.char_idf.astype(np.float64),
            "coef": np.ascontiguousarray(self.coef, dtype=np.float32),
            "intercept": self.intercept.astype(np.float32),
        }
        json_path, arrays_path = directory / JSON_NAME, directory / ARRAYS_NAME
        write_bytes_atomic(arrays_path, st_save(arrays, metadata={"format": FORMAT}))
        write_bytes_atomic(json_path, json.dumps(meta).encode("utf-8"))
        return [json_path, arrays_path]

    @classmethod
    def load(cls, directory: Path) -> NgramClassifier:
        """Rebuild a saved model; raises BundleError if files are missing, corrupt or inconsistent."""
        directory = Path(directory)
        files = read_ngram_files(directory)
        params = files.params
        try:
            model = cls(
                **{**params, "word_ngrams": tuple(params["word_ngrams"]), "char_ngrams": tuple(params["char_ngrams"])}
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{directory / JSON_NAME} is incomplete or invalid ({exc!s:.80})") from None
        model.n_classes = files.n_classes
        model.word_vocabulary, model.char_vocabulary = files.word_vocabulary, files.char_vocabulary
        model.word_idf, model.char_idf = files.word_idf, files.char_idf
        model.coef, model.intercept = files.coef, files.intercept
        return model


# ---------------------------------------------------------------------- helpers
def settings_for(texts: Sequence[str]) -> dict[str, Any]:
    """Constructor settings suited to the corpus: shorter character n-grams when most letters are CJK."""
    sample = "".join(texts[:: max(1, len(texts) // 2000)])
    letters = sum(c.isalpha() for c in sample)
    if letters and len(CJK.findall(sample)) / letters >= 0.5:
        return {"char_ngrams": CJK_CHAR_NGRAMS}
    return {}


def _fit_tfidf(
    texts: list[str], kwargs: dict[str, Any], max_features: int | None, min_df: int
) -> tuple[list[str], np.ndarray]:
    """Vocabulary (terms in column order) and smooth idf; empty if no term survives."""
    vectorizer = TfidfVectorizer(**kwargs, sublinear_tf=True, max_features=max_features, min_df=min_df)
    try:
        vectorizer.fit(texts)
    except ValueError:  # empty vocabulary (e.g. texts with no word characters)
        return [], np.zeros(0, dtype=np.float64)
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return terms, np.asarray(vectorizer.idf_, dtype=np.float64)


def _counter(vocabulary: list[str], kwargs: dict[str, Any]) -> CountVectorizer | None:
    if not vocabulary:
        return None
    return CountVectorizer(**kwargs, vocabulary=vocabulary, dtype=np.float64)


def _tfidf_block(counter: CountVectorizer | None, idf: np.ndarray, texts: list[str]) -> sp.csr_matrix:
    """Same maths as TfidfVectorizer(sublinear_tf=True, norm='l2') with a fixed vocabulary and idf."""
    if counter is None or not texts:
        return sp.csr_matrix((len(texts), len(idf)), dtype=np.float64)
    x = counter.transform(texts).tocsr()
    x.data = np.log(x.data) + 1.0
    x = x @ sp.diags(idf, format="csr")
    return normalize(x, norm="l2", copy=False).tocsr()
