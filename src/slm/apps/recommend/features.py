"""Features of the second-stage ranker, each computed as of the moment of the request.

Item statistics are kept as each item's sorted positive-event times, so popularity and recency
"as of time t" count only events before t: a model evaluated at a user's test time never sees
later events, and the same code serves live requests (t = now, or the data's last event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DAY = 86_400.0
RECENT_DAYS = 30.0
BASE_FEATURES = (
    "text_score",
    "text_score_rank",
    "log_popularity",
    "popularity_share",
    "log_recent_popularity",
    "days_since_last_positive",
    "days_since_first_positive",
    "log_user_history",
)


SPAN = 1 << 32  # seconds per item in the search keys (136 years)


@dataclass
class ItemStats:
    """Each item's positive-event times (sorted), flattened: item r owns ``times[offsets[r]:offsets[r+1]]``.

    ``keys`` (item row x SPAN + seconds since ``origin``) are sorted, so one ``searchsorted`` counts
    the events of many items before a time at once.
    """

    offsets: np.ndarray  # (items + 1,) int64
    times: np.ndarray  # int64 seconds, grouped by item, sorted within each item
    origin: int = 0

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.times = np.asarray(self.times, dtype=np.int64)
        self.origin = int(self.times.min()) - 1 if len(self.times) else 0
        rows = np.repeat(np.arange(self.items, dtype=np.int64), np.diff(self.offsets))
        self.keys = rows * SPAN + (self.times - self.origin)
        self.all_times = np.sort(self.times)

    @classmethod
    def from_events(cls, events: pd.DataFrame, items: int) -> ItemStats:
        positive = events[events.positive]
        order = np.lexsort((positive.timestamp.to_numpy(), positive.item.to_numpy()))
        rows = positive.item.to_numpy()[order]
        counts = np.bincount(rows, minlength=items)
        return cls(np.concatenate([[0], np.cumsum(counts)]), positive.timestamp.to_numpy()[order])

    @property
    def items(self) -> int:
        return len(self.offsets) - 1

    def extended(self, items: int) -> ItemStats:
        """The same statistics over ``items`` items (new ones have no events)."""
        extra = np.full(items - self.items, self.offsets[-1], dtype=np.int64)
        return ItemStats(np.concatenate([self.offsets, extra]), self.times)

    def count_before(self, rows: np.ndarray, at: float) -> np.ndarray:
        """Positive events of each item row strictly before ``at`` (int64)."""
        rows = np.asarray(rows, dtype=np.int64)
        offset = int(np.clip(np.floor(at) - self.origin, 0, SPAN - 1))
        return np.searchsorted(self.keys, rows * SPAN + offset, side="left") - self.offsets[rows]

    def features(self, rows: np.ndarray, at: float) -> dict[str, np.ndarray]:
        """Popularity and recency of ``rows`` as of ``at`` (NaN where an item has no earlier event)."""
        rows = np.asarray(rows, dtype=np.int64)
        before = self.count_before(rows, at)
        recent = before - self.count_before(rows, at - RECENT_DAYS * DAY)
        has = before > 0
        last = np.full(len(rows), np.nan)
        first = np.full(len(rows), np.nan)
        last[has] = (at - self.times[self.offsets[rows[has]] + before[has] - 1]) / DAY
        first[has] = (at - self.times[self.offsets[rows[has]]]) / DAY
        total = max(1, int(np.searchsorted(self.all_times, at, side="left")))
        return {
            "log_popularity": np.log1p(before),
            "popularity_share": before / total * 1000.0,
            "log_recent_popularity": np.log1p(recent),
            "days_since_last_positive": last,
            "days_since_first_positive": first,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"offsets": self.offsets, "times": self.times}

    @classmethod
    def from_arrays(cls, arrays) -> ItemStats:
        return cls(np.asarray(arrays["offsets"]), np.asarray(arrays["times"]))


def feature_names(numeric_names: list[str]) -> list[str]:
    return [*BASE_FEATURES, *(f"item_{name}" for name in numeric_names)]


def rank_within(scores: np.ndarray) -> np.ndarray:
    """0 for the highest score of a candidate list, 1 for the next..., as a fraction of the list length."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(len(scores))
    return ranks / max(1, len(scores))


def candidate_features(
    rows: np.ndarray,
    text_scores: np.ndarray,
    at: float,
    history_length: int,
    stats: ItemStats,
    numeric: np.ndarray,
) -> np.ndarray:
    """(candidates, features) float32 in :func:`feature_names` order for one user's candidate list."""
    popularity = stats.features(rows, at)
    columns = [
        text_scores.astype(np.float64),
        rank_within(text_scores),
        popularity["log_popularity"],
        popularity["popularity_share"],
        popularity["log_recent_popularity"],
        popularity["days_since_last_positive"],
        popularity["days_since_first_positive"],
        np.full(len(rows), np.log1p(history_length)),
    ]
    matrix = np.column_stack(columns)
    if numeric.shape[1]:
        matrix = np.column_stack([matrix, numeric[rows]])
    return matrix.astype(np.float32)
