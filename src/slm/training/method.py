"""``--method auto``: pick few-shot, head-only or full fine-tuning from the labelled data, and say why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slm.training.config import TrainConfig

# At or below this many examples per class (median) contrastive few-shot training is chosen.
# Measured on BANKING77 at 8 and 16 per class (few-shot 84% / 88% test accuracy, see
# bench/results/learning_curves.md); the crossing point with full fine-tuning above 16 is a
# judgement until `bench/learning_curves.py --sizes 32,64` has been run.
FEWSHOT_MAX_PER_CLASS = 32
# Full fine-tuning speed on 2 CPU cores with minilm-l6, measured by bench/classification.py:
# ~100 examples/s on BANKING77 (~14 tokens a text), ~34 on finance tweets (~40 tokens), i.e. about
# this many tokens a second. Used only for estimates (does full fine-tuning fit --max-minutes?).
FULL_TOKENS_PER_SECOND = 1400.0
FULL_EXAMPLES_PER_SECOND = 100.0  # at BANKING77's text lengths, when lengths are not known


@dataclass(frozen=True)
class MethodChoice:
    method: str
    reason: str


def examples_per_class(targets: np.ndarray, n_labels: int) -> np.ndarray:
    """Training examples per label: class counts (single-label) or positives per label (multi-label)."""
    if targets.ndim == 2:
        return targets.sum(axis=0).astype(int)
    return np.bincount(targets, minlength=n_labels)


def choose_method(targets: np.ndarray, n_labels: int, config: TrainConfig) -> MethodChoice:
    """The training method for this much labelled data, with the reason in one sentence."""
    counts = examples_per_class(targets, n_labels)
    counts = counts[counts > 0]
    median = float(np.median(counts)) if len(counts) else 0.0
    n = len(targets)
    if median < 2:
        return MethodChoice(
            "head",
            f"a median of {median:g} labelled example per class leaves no same-class pairs for contrastive "
            "tuning, so a linear head is fitted on the frozen encoder's embeddings",
        )
    if median <= FEWSHOT_MAX_PER_CLASS:
        return MethodChoice(
            "fewshot",
            f"a median of {median:g} labelled examples per class is few-shot data (<= {FEWSHOT_MAX_PER_CLASS}): "
            "contrastive tuning of the encoder plus a linear head learns more from it than full fine-tuning",
        )
    estimate_min = n * config.epochs / FULL_EXAMPLES_PER_SECOND / 60
    if config.max_minutes is not None and estimate_min > config.max_minutes:
        return MethodChoice(
            "head",
            f"full fine-tuning of {n:,} examples for {config.epochs} epochs would take about {estimate_min:.0f} min, "
            f"more than --max-minutes {config.max_minutes:g}, so a linear head is fitted on the frozen encoder",
        )
    return MethodChoice(
        "full",
        f"a median of {median:g} labelled examples per class is enough to fine-tune every weight "
        f"(about {estimate_min:.0f} min for {config.epochs} epochs on 2 cores)",
    )
