"""Evaluation metrics for single-label and multi-label text classification.

Every function returns plain, JSON-serialisable Python values (no numpy types).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

N_BINS = 15

_PRIMARY = {"single_label": "accuracy", "multi_label": "micro_f1"}


def primary_metric(task: str) -> str:
    """Name of the metric used to compare models for ``task``."""
    try:
        return _PRIMARY[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_PRIMARY)}") from None


def _bin_ids(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Equal-width bin index of each value in [0, 1]; bins are (lo, hi], 0 goes to the first bin."""
    ids = np.ceil(np.clip(values, 0.0, 1.0) * n_bins).astype(int) - 1
    return np.clip(ids, 0, n_bins - 1)


def _calibration_error(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = N_BINS) -> float:
    """Weighted mean over equal-width bins of |mean(outcome) - mean(confidence)|."""
    n = max(confidence.shape[0], 1)
    ids = _bin_ids(confidence, n_bins)
    conf_sum = np.bincount(ids, weights=confidence, minlength=n_bins)
    out_sum = np.bincount(ids, weights=outcome.astype(float), minlength=n_bins)
    return float(np.abs(out_sum - conf_sum).sum() / n)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE: bins over the predicted class's probability, compared with accuracy."""
    pred = proba.argmax(axis=1)
    return _calibration_error(proba.max(axis=1), pred == y_true, n_bins)


def binary_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> float:
    """Mean over labels of the binned |observed positive rate - mean predicted probability|."""
    if proba.shape[1] == 0:
        return 0.0
    errors = [_calibration_error(proba[:, j], y_true[:, j], n_bins) for j in range(proba.shape[1])]
    return float(np.mean(errors))


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str], **kw: Any) -> dict:
    """{label: {precision, recall, f1, support}} for every label, absent ones included."""
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0, **kw)
    return {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(label_names)
    }


def _check_inputs(y_true: np.ndarray, proba: np.ndarray, label_names: list[str], texts: list[str] | None):
    if proba.ndim != 2 or proba.shape[1] != len(label_names):
        raise ValueError(f"proba must be (n, {len(label_names)}), got {proba.shape}")
    if proba.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    if y_true.shape[0] != proba.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but proba has {proba.shape[0]}")
    if texts is not None and len(texts) != proba.shape[0]:
        raise ValueError(f"texts has {len(texts)} items but proba has {proba.shape[0]} rows")


def single_label_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    label_names: list[str],
    texts: list[str] | None = None,
    n_mistakes: int = 20,
) -> dict:
    """Accuracy, F1s, per-class scores, confusion matrix, ECE and the most confident mistakes."""
    y_true = np.asarray(y_true).astype(int).ravel()
    proba = np.asarray(proba, dtype=float)
    label_names = [str(x) for x in label_names]
    _check_inputs(y_true, proba, label_names, texts)
    labels = list(range(len(label_names)))
    y_pred = proba.argmax(axis=1)
    confidence = proba.max(axis=1)

    def f1(avg: str) -> float:
        return float(f1_score(y_true, y_pred, labels=labels, average=avg, zero_division=0))

    wrong = np.flatnonzero(y_pred != y_true)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][: max(n_mistakes, 0)]
    mistakes = []
    for i in order:
        item: dict[str, Any] = {}
        if texts is not None:
            item["text"] = str(texts[i])
        item.update(
            index=int(i),
            true=label_names[y_true[i]],
            predicted=label_names[y_pred[i]],
            confidence=float(confidence[i]),
        )
        mistakes.append(item)

    return {
        "task": "single_label",
        "n": int(y_true.shape[0]),
        "labels": label_names,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": f1("macro"),
        "micro_f1": f1("micro"),
        "weighted_f1": f1("weighted"),
        "ece": expected_calibration_error(y_true, proba),
        "per_class": _per_class(y_true, y_pred, label_names, labels=labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confident_mistakes": mistakes,
    }


def _label_confusion(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """{label: {tp, fp, fn, tn}}, each label judged on its own."""
    mcm = multilabel_confusion_matrix(y_true, y_pred)
    return {
        name: {"tp": int(m[1, 1]), "fp": int(m[0, 1]), "fn": int(m[1, 0]), "tn": int(m[0, 0])}
        for name, m in zip(label_names, mcm, strict=True)
    }


def multi_label_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    thresholds: np.ndarray,
    label_names: list[str],
    texts: list[str] | None = None,
    n_mistakes: int = 20,
) -> dict:
    """Micro/macro/samples F1, subset accuracy, Hamming loss, per-label scores and confusion, ECE."""
    y_true = (np.asarray(y_true) > 0).astype(int)
    proba = np.asarray(proba, dtype=float)
    label_names = [str(x) for x in label_names]
    _check_inputs(y_true, proba, label_names, texts)
    if y_true.shape != proba.shape:
        raise ValueError(f"y_true shape {y_true.shape} differs from proba shape {proba.shape}")
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (proba.shape[1],))
    y_pred = (proba >= thresholds).astype(int)

    def f1(avg: str) -> float:
        return float(f1_score(y_true, y_pred, average=avg, zero_division=0))

    # How sure the model was of each (wrong) decision: p for a predicted positive, 1-p otherwise.
    decision_conf = np.where(y_pred == 1, proba, 1.0 - proba)
    rows, cols = np.nonzero(y_pred != y_true)
    order = np.argsort(-decision_conf[rows, cols], kind="stable")[: max(n_mistakes, 0)]
    mistakes = []
    for r, c in zip(rows[order], cols[order], strict=True):
        item: dict[str, Any] = {}
        if texts is not None:
            item["text"] = str(texts[r])
        item.update(
            index=int(r),
            label=label_names[c],
            truth=bool(y_true[r, c]),
            predicted=bool(y_pred[r, c]),
            probability=float(proba[r, c]),
            threshold=float(thresholds[c]),
        )
        mistakes.append(item)

    return {
        "task": "multi_label",
        "n": int(y_true.shape[0]),
        "labels": label_names,
        "thresholds": [float(t) for t in thresholds],
        "micro_f1": f1("micro"),
        "macro_f1": f1("macro"),
        "samples_f1": f1("samples"),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "ece": binary_calibration_error(y_true, proba),
        "per_class": _per_class(y_true, y_pred, label_names),
        "label_confusion": _label_confusion(y_true, y_pred, label_names),
        "confident_mistakes": mistakes,
    }
