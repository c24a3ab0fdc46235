"""Sentiment (and optional topic) for a batch of texts, through the torch-free ONNX runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slm.apps.monitor.config import NEGATIVE_NAMES, POSITIVE_NAMES, MonitorConfig, polarity_labels
from slm.errors import BundleError
from slm.runtime import load


@dataclass(frozen=True)
class Classified:
    sentiment: str
    sentiment_score: float
    polarity: int  # -1 negative, 0 neither, 1 positive
    topic: str | None = None
    topic_score: float | None = None


class Classifier:
    """The sentiment bundle, its negative/positive labels, and the topic bundle if there is one."""

    def __init__(self, config: MonitorConfig) -> None:
        self.sentiment = _open(config.sentiment.bundle, "sentiment", config.threads)
        labels = list(self.sentiment.labels)
        self.negative = polarity_labels(labels, config.sentiment.negative, NEGATIVE_NAMES, "negative")
        self.positive = polarity_labels(labels, config.sentiment.positive, POSITIVE_NAMES, "positive")
        if self.negative & self.positive:
            raise BundleError(f"sentiment: {', '.join(sorted(self.negative & self.positive))} cannot be both "
                              "negative and positive")  # fmt: skip
        self.polarity = np.array([-1 if lab in self.negative else 1 if lab in self.positive else 0 for lab in labels])
        self.topic = None if config.topic is None else _open(config.topic.bundle, "topic", config.threads)
        self.batch_size = config.batch_size

    def __call__(self, texts: list[str]) -> list[Classified]:
        if not texts:
            return []
        proba = self.sentiment.predict_proba(texts, batch_size=self.batch_size)
        best = proba.argmax(axis=1)
        labels = self.sentiment.labels
        topics: list[tuple[str | None, float | None]] = [(None, None)] * len(texts)
        if self.topic is not None:
            topic_proba = self.topic.predict_proba(texts, batch_size=self.batch_size)
            top = topic_proba.argmax(axis=1)
            topics = [(self.topic.labels[j], float(topic_proba[i, j])) for i, j in enumerate(top)]
        return [
            Classified(labels[j], float(proba[i, j]), int(self.polarity[j]), *topics[i]) for i, j in enumerate(best)
        ]


def _open(path: Path, what: str, threads: int | None):
    bundle = load(path, threads=threads)
    if bundle.multi_label:
        raise BundleError(f"{what} bundle {path} is multi-label; the monitor needs one label per text")
    return bundle
