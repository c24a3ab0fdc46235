"""What "in distribution" looks like for a bundle, recorded at training time for the server's drift monitor.

The server (:mod:`slm.serving.drift`) compares what it predicts now with this reference: the share of each
label against the training label counts, and the top-label confidence against the confidence the shipped
component had on the validation split (texts it was not trained on, so the profile is an honest one).

Pure functions of labels and probabilities (numpy only): training (:mod:`slm.training.run`) and ``slm update``
call :func:`drift_reference` for the bundle they write; export and compress copy the manifest, so the record
follows the model. It lives beside the manifest schema, not in :mod:`slm.reports`, because the layers keep
``slm.reports`` and ``slm.bundle`` independent of each other and the record is a manifest record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from slm.bundle.schema import ConfidenceProfile, DriftReference
from slm.errors import DataError

# A text whose top label has a probability under this is "low confidence". On BANKING77 (77 intents, MiniLM)
# about 5% of validation texts fall under it, and most CLINC150 out-of-scope queries do.
LOW_CONFIDENCE = 0.5
PERCENTILES = np.arange(101)


def confidence_profile(proba: np.ndarray, *, low_threshold: float = LOW_CONFIDENCE) -> ConfidenceProfile:
    """The top-probability profile of ``proba`` (one row per text): mean, spread, percentiles, low-confidence rate."""
    rows = np.asarray(proba, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise DataError(f"a confidence profile needs a non-empty (texts, labels) array of probabilities, "
                        f"not one of shape {rows.shape}")  # fmt: skip
    top = rows.max(axis=1)
    return ConfidenceProfile(
        texts=int(top.size),
        mean=round(float(top.mean()), 6),
        std=round(float(top.std()), 6),
        quantiles=[round(float(q), 6) for q in np.percentile(top, PERCENTILES)],
        low_threshold=low_threshold,
        low_rate=round(float((top < low_threshold).mean()), 6),
    )


def drift_reference(
    train_labels: Sequence[str],
    labels: list[str],
    validation_proba: np.ndarray,
    *,
    component: str = "transformer",
    source: str = "training",
) -> DriftReference:
    """The drift reference of a model trained on ``train_labels`` (one label per training text) whose
    ``component`` gave ``validation_proba`` (columns in ``labels`` order) on its validation split.

    Every label gets a count, zero included, so a label never seen in training still has a place.
    """
    counts = Counter(train_labels)
    unknown = sorted(set(counts) - set(labels))
    if unknown:
        raise DataError(f"training labels {', '.join(unknown[:5])} are not among the model's labels")
    proba = np.asarray(validation_proba)
    if proba.ndim != 2 or proba.shape[1] != len(labels):
        raise DataError(f"validation probabilities of shape {proba.shape} do not match {len(labels)} labels")
    return DriftReference(
        label_counts={label: int(counts.get(label, 0)) for label in labels},
        confidence={component: confidence_profile(proba)},
        source=source,
    )


def rate_below(profile: ConfidenceProfile, threshold: float) -> float:
    """The share of reference texts whose top probability is under ``threshold``.

    Exact at the profile's own threshold; elsewhere read off its percentiles (to about one point).
    """
    if threshold == profile.low_threshold:
        return profile.low_rate
    quantiles = np.maximum.accumulate(np.asarray(profile.quantiles, dtype=np.float64))
    if threshold <= quantiles[0]:
        return 0.0
    if threshold > quantiles[-1]:
        return 1.0
    # between the last percentile under the threshold and the next one: their midpoint (ties, many texts
    # at 0.99..., count as above the threshold)
    under = int(np.searchsorted(quantiles, threshold, side="left"))
    return (under - 0.5) / (len(quantiles) - 1)
