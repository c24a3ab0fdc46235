"""The accuracy gate: a compressed variant ships only if it scores within ``gate_points`` of its reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from slm.errors import ModelError
from slm.reports import primary_metric

DEFAULT_GATE_POINTS = 1.0


class GateRejected(ModelError):
    """A compressed variant lost more accuracy than the gate allows."""


@dataclass
class GateResult:
    """Reference vs candidate on the same labelled texts."""

    metric: str
    reference: float
    candidate: float
    drop_points: float
    agreement: float
    texts: int

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def score(proba: np.ndarray, targets: np.ndarray, task: str, thresholds: np.ndarray | None = None) -> tuple[str, float]:
    """The task's primary metric: accuracy (single-label) or micro-F1 at the thresholds (multi-label)."""
    if task == "multi_label":
        from sklearn.metrics import f1_score

        predicted = (proba >= (0.5 if thresholds is None else thresholds[None, :])).astype(int)
        return primary_metric(task), float(f1_score(targets.astype(int), predicted, average="micro", zero_division=0))
    return primary_metric(task), float((proba.argmax(1) == targets).mean())


def measure(
    reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray, task: str, thresholds: np.ndarray | None = None
) -> GateResult:
    """Score both probability matrices; agreement is argmax (single-label) or exact label-set match."""
    metric, ref = score(reference, targets, task, thresholds)
    _, cand = score(candidate, targets, task, thresholds)
    if task == "multi_label":
        cut = 0.5 if thresholds is None else thresholds[None, :]
        agreement = float(((reference >= cut) == (candidate >= cut)).all(axis=1).mean())
    else:
        agreement = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return GateResult(metric, ref, cand, round(100.0 * (ref - cand), 4), agreement, len(targets))


def enforce(result: GateResult, gate_points: float, variant: str) -> GateResult:
    """Raise GateRejected, in one line, when the candidate lost more than ``gate_points``."""
    if result.drop_points > gate_points:
        raise GateRejected(
            f"{variant} rejected by the accuracy gate: validation {result.metric} fell "
            f"{result.drop_points:.2f} points ({100 * result.reference:.2f}% -> {100 * result.candidate:.2f}%, "
            f"gate {gate_points:.2f}); nothing was written"
        )
    return result
