"""Out-of-scope detection: calibrated confidence plus a Mahalanobis distance, one threshold.

Two scores say how much a query looks like the intents the model was trained on:

- **confidence**: the log of the top softmax probability after temperature scaling (fitted on
  validation by log-loss);
- **distance**: the smallest Mahalanobis distance from the query's sentence embedding to an
  intent's mean training embedding, under one shared covariance (Lee et al., 2018; Ledoit-Wolf
  shrinkage). A query far from every intent is out of scope even when the softmax is confident.

Each is standardised on the in-scope validation queries and they are mixed with a weight chosen on
validation by AUROC when out-of-scope validation examples exist (else 0.5). The threshold is the
highest that keeps validation in-scope accuracy (a rejected in-scope query counts as wrong) at the
target, so it needs no out-of-scope examples at all. Fitting needs scikit-learn; scoring is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEMPERATURES = np.geomspace(0.25, 8.0, 41)
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))
DEFAULT_WEIGHT = 0.5


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature with the lowest validation log-loss."""
    losses = [-log_softmax(logits / t)[np.arange(len(targets)), targets].mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative."""
    from sklearn.metrics import roc_auc_score

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return float(roc_auc_score(labels, np.concatenate([positive, negative])))


@dataclass
class ScopeModel:
    """Everything needed to score a query's in-scope-ness at run time (numpy only)."""

    temperature: float
    centroids: np.ndarray  # (intents, dim): mean training embedding per in-scope intent
    precision: np.ndarray  # (dim, dim): inverse shared covariance
    centre: dict[str, float]  # mean/std of confidence and distance over in-scope validation queries
    weight: float = DEFAULT_WEIGHT
    threshold: float = float("-inf")
    report: dict = field(default_factory=dict)

    def parts(self, logits: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted class, top calibrated probability and the smallest Mahalanobis distance per query."""
        logp = log_softmax(logits / self.temperature)
        predicted = logp.argmax(1)
        diff = embeddings[:, None, :] - self.centroids[None, :, :]  # (n, k, d)
        squared = np.einsum("nkd,de,nke->nk", diff, self.precision, diff, optimize=True)
        return predicted, np.exp(logp.max(1)), np.sqrt(np.maximum(squared.min(1), 0.0))

    def combine(self, confidence: np.ndarray, distance: np.ndarray, weight: float | None = None) -> np.ndarray:
        """The in-scope score: higher is more in scope."""
        w = self.weight if weight is None else weight
        c = self.centre
        conf = (np.log(np.maximum(confidence, 1e-12)) - c["confidence_mean"]) / c["confidence_std"]
        dist = (c["distance_mean"] - distance) / c["distance_std"]
        return w * conf + (1.0 - w) * dist

    def score(self, logits: np.ndarray, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        predicted, confidence, distance = self.parts(logits, embeddings)
        score = self.combine(confidence, distance)
        return {
            "predicted": predicted,
            "confidence": confidence,
            "distance": distance,
            "score": score,
            "in_scope": score >= self.threshold,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids.astype(np.float32), "precision": self.precision.astype(np.float32)}

    def spec(self) -> dict:
        return {
            "temperature": self.temperature,
            "centre": self.centre,
            "weight": self.weight,
            "threshold": self.threshold if np.isfinite(self.threshold) else None,
            "report": self.report,
        }

    @classmethod
    def from_parts(cls, spec: dict, arrays: dict[str, np.ndarray]) -> ScopeModel:
        threshold = spec.get("threshold")
        return cls(
            temperature=float(spec["temperature"]),
            centroids=np.asarray(arrays["centroids"], dtype=np.float32),
            precision=np.asarray(arrays["precision"], dtype=np.float32),
            centre={k: float(v) for k, v in spec["centre"].items()},
            weight=float(spec["weight"]),
            threshold=float("-inf") if threshold is None else float(threshold),
            report=dict(spec.get("report", {})),
        )


def fit_distance(
    train_embeddings: np.ndarray, train_targets: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the shrunk shared precision matrix of training embeddings."""
    from sklearn.covariance import LedoitWolf

    dim = train_embeddings.shape[1]
    centroids = np.zeros((n_classes, dim), dtype=np.float64)
    present = np.zeros(n_classes, dtype=bool)
    for k in range(n_classes):
        rows = train_embeddings[train_targets == k]
        if len(rows):
            centroids[k] = rows.mean(0)
            present[k] = True
    residuals = train_embeddings - centroids[train_targets]
    precision = LedoitWolf(assume_centered=True).fit(residuals).precision_
    # An intent with no training example (e.g. the explicit out-of-scope class) gets no centroid.
    return centroids[present].astype(np.float32), precision.astype(np.float32)


def accuracy_at(threshold: float, score: np.ndarray, correct: np.ndarray) -> float:
    """In-scope accuracy when queries scoring below ``threshold`` are rejected (and count as wrong)."""
    return float((correct & (score >= threshold)).mean()) if len(correct) else 0.0


def choose_threshold(score: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float]:
    """The highest threshold whose in-scope accuracy is still >= ``target``, and that accuracy.

    Returns ``(-inf, accuracy without rejection)`` when even no rejection misses the target.
    """
    if len(score) == 0:
        return float("-inf"), 0.0
    order = np.argsort(-score, kind="stable")
    kept_correct = np.cumsum(correct[order]) / len(score)  # accuracy when the top j+1 scores are accepted
    reached = np.flatnonzero(kept_correct >= target)
    if len(reached) == 0:
        return float("-inf"), float(correct.mean())
    threshold = float(score[order][reached[0]])
    return threshold, accuracy_at(threshold, score, correct)


def fit_scope(
    train_embeddings: np.ndarray,
    train_targets: np.ndarray,
    val_logits: np.ndarray,
    val_embeddings: np.ndarray,
    val_targets: np.ndarray,
    *,
    n_classes: int,
    target_accuracy: float,
    out_of_scope: np.ndarray | None = None,
    oos_class: int | None = None,
) -> ScopeModel:
    """Fit the scope model on training embeddings and validation queries.

    ``val_targets`` holds the in-scope class of each validation query, or -1 for out-of-scope
    ones; ``oos_class`` is the explicit out-of-scope intent (a prediction of it is a rejection).
    """
    in_scope = val_targets >= 0
    if oos_class is not None:
        in_scope &= val_targets != oos_class
        keep = train_targets != oos_class
        train_embeddings, train_targets = train_embeddings[keep], train_targets[keep]
    centroids, precision = fit_distance(train_embeddings, train_targets, n_classes)
    labelled = val_targets >= 0
    temperature = fit_temperature(val_logits[labelled], val_targets[labelled]) if labelled.any() else 1.0
    model = ScopeModel(temperature, centroids, precision, {})
    predicted, confidence, distance = model.parts(val_logits, val_embeddings)
    log_conf = np.log(np.maximum(confidence[in_scope], 1e-12))
    model.centre = {
        "confidence_mean": float(log_conf.mean()),
        "confidence_std": float(log_conf.std() or 1.0),
        "distance_mean": float(distance[in_scope].mean()),
        "distance_std": float(distance[in_scope].std() or 1.0),
    }
    oos = ~in_scope
    predicted_oos = (predicted == oos_class) if oos_class is not None else np.zeros(len(predicted), dtype=bool)
    aurocs = {}
    if oos.any():
        for w in WEIGHTS:
            s = model.combine(confidence, distance, w)
            aurocs[w] = auroc(s[in_scope], s[oos])
        model.weight = max(aurocs, key=lambda w: (aurocs[w], -abs(w - DEFAULT_WEIGHT)))
    score = model.combine(confidence, distance)
    correct = (predicted == val_targets) & ~predicted_oos
    threshold, accuracy = choose_threshold(score[in_scope], correct[in_scope], target_accuracy)
    model.threshold = threshold
    accepted = (score >= threshold) & ~predicted_oos
    model.report = {
        "target_in_scope_accuracy": target_accuracy,
        "validation_in_scope_accuracy": round(accuracy, 5),
        "validation_accuracy_without_rejection": round(float(correct[in_scope].mean()), 5),
        "validation_in_scope": int(in_scope.sum()),
        "validation_out_of_scope": int(oos.sum()),
        "validation_oos_recall": round(float((~accepted[oos]).mean()), 5) if oos.any() else None,
        "weight_auroc": {str(w): round(a, 5) for w, a in aurocs.items()},
        "target_met": bool(accuracy >= target_accuracy),
    }
    return model


def tradeoff(
    score: np.ndarray, correct: np.ndarray, in_scope: np.ndarray, rejected_anyway: np.ndarray, points: int = 101
):
    """In-scope accuracy, out-of-scope recall and precision across thresholds (for the trade-off curve)."""
    finite = score[np.isfinite(score)]
    grid = np.unique(np.quantile(finite, np.linspace(0, 1, points))) if len(finite) else np.array([0.0])
    rows = []
    for t in np.concatenate([[-np.inf], grid]):
        rejected = (score < t) | rejected_anyway
        rows.append(oos_metrics(rejected, correct, in_scope) | {"threshold": float(t)})
    return rows


def oos_metrics(rejected: np.ndarray, correct: np.ndarray, in_scope: np.ndarray) -> dict:
    """In-scope accuracy, and out-of-scope precision/recall/F1 of the rejections."""
    oos = ~in_scope
    tp = int((rejected & oos).sum())
    precision = tp / max(int(rejected.sum()), 1)
    recall = tp / max(int(oos.sum()), 1)
    return {
        "in_scope_accuracy": float((correct & ~rejected)[in_scope].mean()) if in_scope.any() else None,
        "oos_recall": recall if oos.any() else None,
        "oos_precision": precision if rejected.any() else None,
        "oos_f1": (2 * precision * recall / (precision + recall)) if (precision + recall) > 0 else 0.0,
        "rejected": int(rejected.sum()),
    }
