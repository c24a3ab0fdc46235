"""The item catalogue in a fixed row order: ids, the text the item tower reads, numeric features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slm.errors import DataError

MAX_SHOWN = 3


@dataclass
class Catalogue:
    """Items in a fixed order: ids, the text the item tower reads, numeric features."""

    ids: list[str]
    texts: list[str]
    numeric: np.ndarray  # (items, features) float32, NaN where unknown
    numeric_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def position(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.ids)}

    def to_dict(self) -> dict:
        return {
            "ids": self.ids,
            "texts": self.texts,
            "numeric_names": self.numeric_names,
            "numeric": [[None if np.isnan(v) else float(v) for v in row] for row in self.numeric],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Catalogue:
        numeric = np.array(
            [[np.nan if v is None else v for v in row] for row in data["numeric"]], dtype=np.float32
        ).reshape(len(data["ids"]), len(data["numeric_names"]))
        return cls(list(data["ids"]), list(data["texts"]), numeric, list(data["numeric_names"]))

    def extended(self, other: Catalogue) -> Catalogue:
        """This catalogue followed by ``other``'s items (same numeric features; missing ones are NaN)."""
        clash = sorted(set(self.ids) & set(other.ids))
        if clash:
            raise DataError(
                f"{len(clash)} new items are already in the catalogue (e.g. {', '.join(clash[:MAX_SHOWN])})"
            )
        columns = [other.numeric_names.index(n) if n in other.numeric_names else -1 for n in self.numeric_names]
        extra = np.full((len(other), len(self.numeric_names)), np.nan, dtype=np.float32)
        for target, source in enumerate(columns):
            if source >= 0:
                extra[:, target] = other.numeric[:, source]
        return Catalogue(
            self.ids + other.ids, self.texts + other.texts, np.vstack([self.numeric, extra]), list(self.numeric_names)
        )
