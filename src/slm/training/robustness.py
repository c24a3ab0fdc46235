"""The training run's robustness section: the shipped model and the n-gram baseline under perturbations.

The clean probabilities on the evaluation split are the ones the main metrics came from; only the
perturbed sample (at most 500 texts per perturbation) is predicted again, with the fitted model in memory.
Measured cost: ``slm train`` on BANKING77 (9,002 training texts, MiniLM-L6 + n-gram, 2 epochs, 3,080 test
texts; 2 cores shared, load average ~7): the section took 57.0 s against 2,076 s of fine-tuning (2.7%;
bench/results/robustness.md). Turn it off with ``TrainConfig(robustness=False)`` / ``--no-robustness``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slm.models.ensemble import ensemble_probabilities, probabilities
from slm.models.ngram import NgramClassifier
from slm.pipeline import MODEL_NAMES
from slm.reports.robustness import count_labels, robustness_report
from slm.training.batching import encode_texts
from slm.training.trainer import predict_logits


def robustness_models(shipped: str) -> list[str]:
    """The components reported side by side: the shipped one and the n-gram baseline (slm's honest baseline)."""
    return list(dict.fromkeys((shipped, "ngram")))


def training_robustness(
    model: Any,
    ngram: NgramClassifier,
    tokenizer: Any,
    *,
    pad_id: int,
    max_length: int,
    texts: Sequence[str],
    targets: np.ndarray,
    clean: Mapping[str, np.ndarray],
    thresholds: Mapping[str, list[float] | None],
    shipped: str,
    weight: float,
    prior_shift: list[float] | None,
    task: str,
    labels: list[str],
    train_targets: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """The ``robustness`` section for a freshly trained model (``clean``: component -> probabilities on
    ``texts``, the evaluation split); label-frequency slices by the training split's label counts."""
    components = robustness_models(shipped)
    multi_label = task == "multi_label"

    def predict(batch: list[str]) -> dict[str, np.ndarray]:
        probas = {"ngram": ngram.predict_proba(batch)}
        if set(components) - {"ngram"}:
            logits = predict_logits(model, encode_texts(tokenizer, batch, max_length), pad_id)
            probas["transformer"] = probabilities(logits, multi_label)
            probas["ensemble"] = ensemble_probabilities(probas["transformer"], probas["ngram"], weight, prior_shift)
        return {MODEL_NAMES[c]: probas[c] for c in components}

    return robustness_report(
        texts,
        targets,
        {MODEL_NAMES[c]: clean[c] for c in components},
        predict,
        task=task,
        labels=labels,
        thresholds={MODEL_NAMES[c]: thresholds.get(c) for c in components},
        label_counts=count_labels(task, train_targets, labels),
        label_counts_source="training",
        seed=seed,
        over_limit=over_token_limit(tokenizer, texts, max_length),
        token_limit=max_length,
    )


def over_token_limit(tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Which texts the transformer reads only in part: tokenised to one token past ``max_length``, any text
    that reaches it was cut."""
    encoded = encode_texts(tokenizer, list(texts), max_length + 1)
    return np.array([len(ids) > max_length for ids in encoded.ids], dtype=bool)
