"""Which component a compressed bundle predicts with by default: the ensemble, when it still wins on validation.

Training ships the ensemble (transformer + n-gram baseline) only when it beats the transformer alone on
validation (``slm.training.run._default_component``), with a transformer weight tuned against the
PyTorch transformer's probabilities. A compressed transformer (int8, pruned) gives other probabilities,
so the choice is made again on the validation texts the step already scores, with the same rule and
metric (macro-F1, or micro-F1 for multi-label): the ensemble stays the default only if it still beats
the compressed transformer alone. The n-gram half is computed with numpy
(:class:`slm.runtime.ngram.NgramPredictor`), as the runtime and the server will compute it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slm.bundle.manifest import bundle_path
from slm.bundle.schema import Manifest
from slm.compression.gate import measure
from slm.models.ensemble import ensemble_probabilities
from slm.pipeline import score_function
from slm.runtime.ngram import NgramPredictor

log = logging.getLogger(__name__)

SCORE_NAMES = {"single_label": "macro_f1", "multi_label": "micro_f1"}


@dataclass
class DefaultChoice:
    """The default component of a derived bundle and what it was chosen on.

    ``record`` goes to the manifest's ``compression["default_component"]``; ``ensemble`` (a gate-style
    comparison of the parent's ensemble with the derived one) to its validation metrics.
    """

    component: str
    record: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] | None = None


def ships_ensemble(manifest: Manifest) -> bool:
    """Whether ``manifest``'s bundle predicts with its ensemble by default (an unset default means the ensemble)."""
    components = manifest.components
    has_transformer = components.transformer is not None or components.onnx is not None
    return (
        (manifest.default_component or "ensemble") == "ensemble"
        and manifest.ensemble is not None
        and components.ngram is not None
        and has_transformer
    )


def choose_default(
    bundle: Path,
    manifest: Manifest,
    texts: list[str],
    targets: np.ndarray,
    *,
    parent: np.ndarray,
    derived: np.ndarray,
    step: str,
) -> DefaultChoice:
    """The ensemble if the parent shipped it and it still beats the derived transformer alone on ``texts``.

    ``parent`` and ``derived`` are the parent's and the derived transformer's probabilities on ``texts``
    (labelled validation texts, ``targets`` as the gate reads them); ``bundle``/``manifest`` hold the
    n-gram model and the ensemble settings, which compression does not change.
    """
    if not ships_ensemble(manifest) or not len(texts):
        return DefaultChoice("transformer")
    assert manifest.ensemble is not None and manifest.components.ngram is not None  # ships_ensemble checked
    ngram = NgramPredictor.load(bundle_path(bundle, manifest, manifest.components.ngram.dir)).predict_proba(texts)
    weight, shift = float(manifest.ensemble.transformer_weight), manifest.ensemble.log_prior_shift
    before = ensemble_probabilities(parent, ngram, weight, shift)
    after = ensemble_probabilities(derived, ngram, weight, shift)
    task, labels = manifest.task, list(manifest.labels or [])
    score = score_function(task, targets, len(labels))
    transformer_score, ensemble_score = score(derived), score(after)
    component = "ensemble" if ensemble_score > transformer_score + 1e-9 else "transformer"
    record = {
        "component": component,
        "step": step,
        "chosen_on": "validation",
        "metric": SCORE_NAMES.get(task, "score"),
        "transformer": round(transformer_score, 6),
        "ensemble": round(ensemble_score, 6),
        "texts": len(texts),
    }
    thresholds = (manifest.thresholds or {}).get("ensemble")
    gate = measure(before, after, targets, task, None if thresholds is None else np.asarray(thresholds))
    metric = record["metric"].replace("_", "-")
    if component == "ensemble":
        log.info(
            f"  default: the ensemble (validation {metric} {100 * ensemble_score:.2f}% against "
            f"{100 * transformer_score:.2f}% for the {step} transformer alone)"
        )
    else:
        log.warning(
            f"note: with the {step} transformer the ensemble no longer beats the transformer alone on validation "
            f"({metric} {100 * ensemble_score:.2f}% against {100 * transformer_score:.2f}%); the transformer is "
            "the default (the ensemble stays in the bundle: --component ensemble)"
        )
    return DefaultChoice(component, record, gate.to_dict())
