"""Negative-spike detection: each series' negative count in a window against its own baseline.

Two baselines of the previous ``history`` windows:

- ``robust_z``: median and MAD;
- ``ewma``: exponentially weighted mean and variance.

The score is the smaller of two z-scores, so both must agree: the count against the baseline's
own spread (floored at the Poisson spread, so a series steady at 2 negatives an hour has no zero
spread), and the Poisson tail probability of the count given the baseline, as a z-score (small
counts have heavy right tails: 8 against a baseline of 2 is a 1-in-1,000 event, not "4.2 sigma").

A window alerts when its negatives reach ``min_volume``, its score reaches ``threshold``, it
holds ``min_ratio`` times the baseline, the series was seen ``min_history`` windows before it,
and the series has not alerted in the ``cooldown`` windows before it: one event, one alert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from slm.apps.monitor.config import AlertConfig
from slm.apps.monitor.storage import Counts

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Spike:
    negatives: int
    total: int
    baseline: float
    score: float


def baseline_score(history: Sequence[int], current: int, config: AlertConfig) -> tuple[float, float]:
    """(baseline, score) of ``current`` against ``history`` (oldest first) by ``config.method``."""
    if not history:
        return 0.0, 0.0
    if config.method == "ewma":
        mean, var = float(history[0]), 0.0
        for value in history[1:]:
            delta = value - mean
            mean += config.ewma_alpha * delta
            var = (1 - config.ewma_alpha) * (var + config.ewma_alpha * delta * delta)
        spread = math.sqrt(var)
    else:
        ordered = sorted(history)
        mean = _median(ordered)
        spread = MAD_TO_SIGMA * _median(sorted(abs(v - mean) for v in ordered))
    spread = max(spread, math.sqrt(max(mean, 1.0)))
    return mean, min((current - mean) / spread, poisson_z(current, mean))


def poisson_z(count: int, mean: float) -> float:
    """P(X >= count) for X ~ Poisson(max(mean, 0.5)), as the z-score with the same upper tail."""
    rate = max(mean, 0.5)
    if count <= rate:
        return (count - rate) / math.sqrt(rate)
    log_term = -rate + count * math.log(rate) - math.lgamma(count + 1)
    tail, k = 0.0, count
    while True:  # the terms fall geometrically once k > rate
        term = math.exp(log_term)
        tail += term
        k += 1
        log_term += math.log(rate) - math.log(k)
        if term < tail * 1e-12 or k > count + 10_000:
            break
    if tail <= 0.0:
        return 40.0
    return -NormalDist().inv_cdf(min(tail, 0.5))


def spike(counts: dict[int, Counts], window: int, config: AlertConfig, last_alert: int | None) -> Spike | None:
    """The spike in ``window`` of one series (``counts`` by window index), or None."""
    now = counts.get(window)
    if now is None or now.negative < config.min_volume:
        return None
    if last_alert is not None and window - last_alert <= config.cooldown:
        return None
    first_seen = min(counts)
    if window - first_seen < config.min_history:
        return None
    start = max(first_seen, window - config.history)
    history = [counts[w].negative if w in counts else 0 for w in range(start, window)]
    baseline, score = baseline_score(history, now.negative, config)
    if score < config.threshold or now.negative < config.min_ratio * max(baseline, 1.0):
        return None
    return Spike(now.negative, now.total, baseline, score)


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
