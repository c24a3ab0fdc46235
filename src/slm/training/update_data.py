"""The data of an update: usable feedback, its held-out slice, the rehearsal sample (no PyTorch here)."""

from __future__ import annotations

import random
from collections import defaultdict

from slm.data.dataset import TextDataset

Rows = tuple[list[str], list[str]]  # (texts, labels)


def usable_feedback(ds: TextDataset, test_texts: set[str]) -> tuple[Rows, dict[str, int]]:
    """Labelled feedback texts, the last label given per text, none from the original test split."""
    latest: dict[str, str] = {}
    for text, label in zip(ds.texts, ds.labels, strict=True):
        if text.strip() and label:
            latest[text] = label
    in_test = [t for t in latest if t in test_texts]
    for text in in_test:  # scoring the candidate on texts it was trained on would flatter it
        del latest[text]
    dropped = {"repeated_or_empty": len(ds) - len(latest) - len(in_test), "in_original_test": len(in_test)}
    return (list(latest), list(latest.values())), dropped


def hold_out(rows: Rows, share: float, seed: int) -> tuple[Rows, Rows]:
    """Per label, ``share`` of the texts (at least one when the label has two or more) kept aside."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in zip(*rows, strict=True):
        by_label[label].append(text)
    rng = random.Random(seed)
    train: Rows = ([], [])
    held: Rows = ([], [])
    for label in sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        n_held = max(1, round(len(texts) * share)) if len(texts) >= 2 else 0
        for i, text in enumerate(texts):
            part = held if i < n_held else train
            part[0].append(text)
            part[1].append(label)
    return train, held


def rehearsal_sample(train: TextDataset, per_label: int, seed: int) -> Rows:
    """Up to ``per_label`` original training texts of every known label, seeded."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(train.labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    picked = sorted(
        i for label in sorted(by_label) for i in rng.sample(by_label[label], min(per_label, len(by_label[label])))
    )
    return [train.texts[i] for i in picked], [train.labels[i] for i in picked]


def labelled(texts: list[str], labels: list[str], names: list[str]) -> TextDataset:
    return TextDataset(texts=list(texts), labels=list(labels), label_names=list(names))
