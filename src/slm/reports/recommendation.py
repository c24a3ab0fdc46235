"""Plain-English verdict: is the fine-tuned model worth its cost over the n-gram baseline?"""

from __future__ import annotations

from dataclasses import dataclass

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


# At or above this share of training texts cut at --max-length, a longer one is named as a likely fix.
TRUNCATED_SHARE_FOR_ADVICE = 0.1


@dataclass(frozen=True)
class RunFacts:
    """What a training run knows that can explain a transformer losing to the n-gram baseline."""

    base_model: str
    english_only_base: bool  # the base model reads English only (registry: minilm-l6)
    non_english: str | None  # the texts' profile when they are not English ("97% Chinese (Han script)"), else None
    max_length: int
    truncated: int  # training texts longer than max_length
    n_train: int
    epochs: int
    epochs_run: int | None
    best_epoch: int | None  # None for few-shot and head-only training (no per-epoch validation)
    stopped_early: bool
    stopped_by_budget: bool
    max_minutes: float | None


def likely_fixes(facts: RunFacts) -> list[str]:
    """The changes most likely to make the transformer win, from what the run measured (most likely first)."""
    fixes = []
    if facts.english_only_base and facts.non_english:
        fixes.append(
            f"--base-model e5-small-multi (the texts are {facts.non_english}; {facts.base_model} reads English)"
        )
    if facts.n_train and facts.truncated / facts.n_train >= TRUNCATED_SHARE_FOR_ADVICE:
        fixes.append(
            f"a longer --max-length than {facts.max_length} ({facts.truncated:,} of {facts.n_train:,} training "
            f"texts, {facts.truncated / facts.n_train:.0%}, were cut)"
        )
    if facts.stopped_by_budget:
        fixes.append(
            f"more time (--max-minutes {facts.max_minutes:g} stopped fine-tuning after {facts.epochs_run} of "
            f"{facts.epochs} epochs)"
        )
    elif (
        facts.best_epoch is not None
        and not facts.stopped_early
        and facts.epochs_run is not None
        and facts.epochs_run >= facts.epochs
        and facts.best_epoch == facts.epochs_run
    ):
        fixes.append(f"more --epochs than {facts.epochs} (validation macro-F1 was still rising in the last epoch)")
    return fixes


def advise(recommendation: dict, fixes: list[str]) -> dict:
    """``recommendation`` with the likely fixes appended to a 'use the baseline' verdict (and listed as ``advice``)."""
    if recommendation.get("verdict") != "baseline":
        return recommendation
    if len(fixes) == 1:
        tail = f" Likely fix: {fixes[0]}."
    elif fixes:
        tail = f" Likely fixes: {'; '.join(fixes)}."
    else:
        tail = (
            " Nothing this run measured points to a fix (the base model fits the language, the texts fit "
            "--max-length, training converged): 'slm tune' searches other methods and learning rates."
        )
    return {**recommendation, "message": recommendation["message"] + tail, "advice": fixes}
