"""Time-ordered evaluation splits: leave-last-out per user, plus cold-start items held out entirely.

For every user the last positive event on a warm item is the **test** case and the one before it
the **validation** case (which trains the second-stage ranker). Nothing of a user at or after the
test time is trained on: ``train_events`` (statistics, collaborative baselines) stop before each
user's test time, ``tower_events`` (the two-tower model) before the validation time. **Cold**
items are a random share of the catalogue whose events are removed from every training set; a
user's last positive on one is a cold case, scored among other cold items only.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from slm.apps.recommend.data import RecData
from slm.errors import DataError

DEFAULT_NEGATIVES = 100
DEFAULT_COLD_FRACTION = 0.1


@dataclass
class Cases:
    """Evaluation (or ranker-training) cases: one held-out positive per user."""

    users: list[str]
    targets: np.ndarray  # item rows
    times: np.ndarray  # seconds
    histories: list[np.ndarray]  # the user's positive item rows before the time, oldest first
    seen: list[np.ndarray]  # every item row the user interacted with before the time
    negatives: np.ndarray  # (cases, n) item rows the user never interacted with

    def __len__(self) -> int:
        return len(self.users)

    def candidates(self) -> np.ndarray:
        """(cases, 1 + n): the target first, then the sampled negatives."""
        return np.column_stack([self.targets, self.negatives])


@dataclass
class Split:
    tower_events: pd.DataFrame
    train_events: pd.DataFrame
    validation: Cases
    test: Cases
    cold: Cases
    warm_items: np.ndarray  # item rows that may be trained on
    cold_items: np.ndarray

    def summary(self) -> dict:
        return {
            "tower_events": len(self.tower_events),
            "train_events": len(self.train_events),
            "validation_cases": len(self.validation),
            "test_cases": len(self.test),
            "cold_cases": len(self.cold),
            "warm_items": len(self.warm_items),
            "cold_items": len(self.cold_items),
        }


def choose_cold_items(data: RecData, fraction: float, seed: int) -> np.ndarray:
    """A random ``fraction`` of the items that have a positive event (sorted item rows)."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"the cold-start fraction must lie in [0, 1), got {fraction}")
    liked = np.unique(data.events.item[data.events.positive].to_numpy())
    count = int(round(len(liked) * fraction))
    return np.sort(np.random.default_rng(seed).choice(liked, size=count, replace=False)) if count else liked[:0]


def _sample(rng: np.random.Generator, pool: np.ndarray, exclude: set[int], n: int) -> np.ndarray:
    allowed = pool[~np.isin(pool, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))]
    if len(allowed) < n:
        raise DataError(f"only {len(allowed)} items are left to sample {n} negatives from; use fewer negatives")
    return rng.choice(allowed, size=n, replace=False)


def _cases(
    rows: list[tuple[Any, ...]], pool: np.ndarray, interacted: dict[Hashable, set[int]], n: int, seed: int
) -> Cases:
    rng = np.random.default_rng(seed)
    negatives = [_sample(rng, pool, interacted[user], n) for user, *_ in rows]
    return Cases(
        users=[r[0] for r in rows],
        targets=np.array([r[1] for r in rows], dtype=np.int64),
        times=np.array([r[2] for r in rows], dtype=np.int64),
        histories=[r[3] for r in rows],
        seen=[r[4] for r in rows],
        negatives=np.array(negatives, dtype=np.int64).reshape(len(rows), n),
    )


def leave_last_out(
    data: RecData,
    *,
    cold_fraction: float = DEFAULT_COLD_FRACTION,
    negatives: int = DEFAULT_NEGATIVES,
    seed: int = 42,
) -> Split:
    """The warm leave-last-out split and the cold-start split of ``data`` (deterministic for a seed)."""
    events = data.events
    cold_items = choose_cold_items(data, cold_fraction, seed)
    is_cold = np.zeros(len(data.catalogue), dtype=bool)
    is_cold[cold_items] = True
    warm_items = np.flatnonzero(~is_cold)
    # keyed by user id (a str column: see RecData.events)
    interacted: dict[Hashable, set[int]] = {
        user: set(group.item.tolist()) for user, group in events.groupby("user", sort=False)
    }
    warm = events[~is_cold[events.item.to_numpy()]]
    test_rows, val_rows, cold_rows = [], [], []
    test_time: dict[Hashable, int] = {}
    val_time: dict[Hashable, int] = {}
    for user, group in events.groupby("user", sort=True):
        times = group.timestamp.to_numpy()
        items = group.item.to_numpy()
        positive = group.positive.to_numpy()
        warm_pos = positive & ~is_cold[items]

        def case(at: int, target: int, user=user, times=times, items=items, warm_pos=warm_pos) -> tuple:
            before = times < at
            return (user, int(target), int(at), items[before & warm_pos], np.unique(items[before]))

        picks = np.flatnonzero(warm_pos)
        if len(picks) >= 2 and times[picks[-1]] > times[picks[0]]:
            last = picks[-1]
            test_rows.append(case(times[last], items[last]))
            test_time[user] = int(times[last])
            earlier = picks[times[picks] < times[last]]
            if len(earlier) >= 2 and times[earlier[-1]] > times[earlier[0]]:
                val_rows.append(case(times[earlier[-1]], items[earlier[-1]]))
                val_time[user] = int(times[earlier[-1]])
        cold_pos = np.flatnonzero(positive & is_cold[items])
        for index in cold_pos[::-1]:  # the last cold positive that has a warm history
            if (warm_pos & (times < times[index])).any():
                cold_rows.append(case(times[index], items[index]))
                break
    if not test_rows:
        raise DataError("no user has two positive events at different times: nothing to evaluate or train on")
    limit = warm.user.map(test_time).fillna(np.inf).to_numpy()
    train_events = warm[warm.timestamp.to_numpy() < limit].reset_index(drop=True)
    tower_limit = train_events.user.map(val_time).fillna(train_events.user.map(test_time)).fillna(np.inf).to_numpy()
    tower_events = train_events[train_events.timestamp.to_numpy() < tower_limit].reset_index(drop=True)
    return Split(
        tower_events=tower_events,
        train_events=train_events,
        validation=_cases(val_rows, warm_items, interacted, negatives, seed + 1),
        test=_cases(test_rows, warm_items, interacted, negatives, seed + 2),
        cold=_cases(cold_rows, cold_items, interacted, negatives, seed + 3)
        if len(cold_items) > negatives
        else _cases([], cold_items, interacted, negatives, seed + 3),
        warm_items=warm_items,
        cold_items=cold_items,
    )
