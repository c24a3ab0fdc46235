"""The in-memory labelled text dataset that every step of the pipeline passes around."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TextDataset:
    """Labelled texts.

    Single-label: ``labels[i]`` is a ``str``. Multi-label: ``labels[i]`` is a ``list[str]``
    (possibly empty). ``label_names`` fixes the label order used by every model and report.
    """

    texts: list[str]
    labels: list
    multi_label: bool = False
    label_names: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")
        if not self.label_names:
            names = {lab for row in self.labels for lab in row} if self.multi_label else set(self.labels)
            self.label_names = sorted(names)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """Rows at ``indices``, keeping the full label order."""
        return TextDataset(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            multi_label=self.multi_label,
            label_names=list(self.label_names),
            source=self.source,
        )

    def label_counts(self) -> Counter:
        """Number of examples carrying each label."""
        if self.multi_label:
            return Counter(lab for row in self.labels for lab in row)
        return Counter(self.labels)

    def targets(self, label_names: Sequence[str] | None = None) -> np.ndarray:
        """Integer class ids ``(n,)`` for single-label, a 0/1 matrix ``(n, k)`` for multi-label.

        Labels unknown to ``label_names`` map to -1 (single-label) or are dropped (multi-label).
        """
        names = list(label_names or self.label_names)
        index = {name: i for i, name in enumerate(names)}
        if self.multi_label:
            out = np.zeros((len(self), len(names)), dtype=np.float32)
            for row, labs in enumerate(self.labels):
                for lab in labs:
                    if lab in index:
                        out[row, index[lab]] = 1.0
            return out
        return np.array([index.get(lab, -1) for lab in self.labels], dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 over texts and labels: identifies exactly which data a model saw."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels, strict=True):
            digest.update(text.encode("utf-8"))
            digest.update(b"\x1f")
            digest.update(json.dumps(label, ensure_ascii=False).encode("utf-8"))
            digest.update(b"\x1e")
        return digest.hexdigest()
