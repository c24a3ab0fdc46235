"""Plain-English verdict: is the fine-tuned model worth its cost over the n-gram baseline?"""

from __future__ import annotations

from slm.reports.metrics import primary_metric

_METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1"}


def _score(models: dict[str, dict], name: str, metric: str) -> float:
    if name not in models:
        raise ValueError(f"no metrics for model {name!r}; have {sorted(models)}")
    value = models[name].get(metric)
    if value is None:
        raise ValueError(f"metrics for model {name!r} have no {metric!r}")
    return float(value)


def recommend(
    models: dict[str, dict],
    *,
    task: str,
    candidate: str,
    baseline: str = "ngram_baseline",
    margin_points: float = 1.0,
) -> dict:
    """Compare ``candidate`` with ``baseline`` on the task's primary metric (points = percentage points).

    The candidate wins only when it beats the baseline by at least ``margin_points``.
    """
    metric = primary_metric(task)
    cand = _score(models, candidate, metric)
    base = _score(models, baseline, metric)
    # Rounded so that e.g. 0.86 - 0.85 counts as exactly 1.0 point at the boundary.
    gain = round((cand - base) * 100.0, 6)
    nice = _METRIC_NAMES.get(metric, metric)
    if gain < margin_points:
        verdict = "baseline"
        message = (
            f"Use the n-gram baseline. The {candidate} model scores {cand:.1%} {nice} against "
            f"{base:.1%} for the TF-IDF + logistic-regression baseline ({gain:+.1f} points, below the "
            f"{margin_points:.1f}-point margin). The baseline is ~100x cheaper to run, so the "
            f"transformer does not earn its place on this data."
        )
    else:
        verdict = "transformer"
        message = (
            f"The transformer earns its place by {gain:.1f} points: the {candidate} model scores "
            f"{cand:.1%} {nice} against {base:.1%} for the TF-IDF + logistic-regression baseline "
            f"(margin {margin_points:.1f} points), which justifies running a model ~100x costlier."
        )
    return {
        "verdict": verdict,
        "primary_metric": metric,
        "candidate": candidate,
        "baseline": baseline,
        "candidate_score": cand,
        "baseline_score": base,
        "gain_points": gain,
        "margin_points": float(margin_points),
        "message": message,
    }
