"""The privacy audit of one bundle: membership inference on its training data, and canary exposure.

Everything runs through :class:`slm.runtime.bundle.Bundle` (per-text class probabilities), so an exported
ONNX bundle is audited without PyTorch, and a PyTorch bundle the same way. Inputs are the training file
(the members) and a holdout file of texts the model never saw (the non-members), both labelled.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slm.audit.canaries import CanarySpec, exposure, random_secrets
from slm.audit.membership import AttackResult, attack_scores, balanced_sample, evaluate_attack, losses
from slm.errors import ConfigError, DataError
from slm.runtime.bundle import Bundle

log = logging.getLogger(__name__)

MIN_PER_SIDE = 20  # below this the AUC's CI spans most of [0, 1]: not an audit


@dataclass(frozen=True)
class AuditInputs:
    """What the audit reads: member and non-member texts with label indices in the bundle's order."""

    members: list[str]
    member_targets: np.ndarray
    nonmembers: list[str]
    nonmember_targets: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)


def read_inputs(
    model: Bundle,
    train: str | Path,
    holdout: str | Path,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    spec: CanarySpec | None = None,
) -> AuditInputs:
    """Members and non-members from labelled files, checked against the bundle's labels (DataError, one line).

    Canary rows are taken out of the members (they are audited by exposure, and 16 copies of one text
    would weigh on the AUC), and holdout texts that also occur in the training file are dropped: a
    "non-member" the model trained on would count a correct guess as a false positive.
    """
    from slm.data.loading import load_dataset
    from slm.data.splitting import align_labels

    sets = []
    for path in (train, holdout):
        ds, _ = load_dataset(path, text_col=text_col, label_col=label_col, min_classes=1)
        if ds.multi_label:
            raise DataError(f"{path}: is multi-label; the privacy audit reads single-label files")
        sets.append(align_labels(ds, model.labels, multi_label=False))
    members, holdout_ds = sets
    canary_texts = {spec.text(c.secret) for c in spec.canaries} if spec is not None else set()
    keep = [i for i, t in enumerate(members.texts) if t not in canary_texts]
    seen = {t.strip() for t in members.texts}
    fresh = [i for i, t in enumerate(holdout_ds.texts) if t.strip() not in seen]
    dropped = {"canary_rows": len(members) - len(keep), "holdout_in_train": len(holdout_ds) - len(fresh)}
    if spec is not None and not dropped["canary_rows"]:
        log.warning("%s holds none of the canaries' texts: their exposure is that of secrets never trained on", train)
    members, holdout_ds = members.subset(keep), holdout_ds.subset(fresh)
    for ds, path, what in ((members, train, "training"), (holdout_ds, holdout, "holdout")):
        if len(ds) < MIN_PER_SIDE:
            raise DataError(f"{path}: only {len(ds)} usable {what} texts; the audit needs at least {MIN_PER_SIDE}")
    return AuditInputs(
        members.texts, members.targets(model.labels), holdout_ds.texts, holdout_ds.targets(model.labels), dropped
    )


def resolve_component(model: Bundle, component: str | None) -> str:
    """The component to audit: ``component``, else the one the bundle ships (ConfigError if it has none such)."""
    name = component or model.default_component
    if name not in model.components:
        raise ConfigError(f"{model.path} has no {name} component (it has: {', '.join(model.components)})")
    return name


def check_single_label(model: Bundle) -> None:
    """Membership scores need one true label per text."""
    if model.multi_label:
        raise ConfigError(f"{model.path} is a multi-label bundle; the privacy audit supports single-label classifiers")


def membership(
    model: Bundle,
    inputs: AuditInputs,
    *,
    component: str | None = None,
    reference: Bundle | None = None,
    max_per_side: int = 2000,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, AttackResult]]:
    """Run every attack on a balanced, seeded sample of members and non-members; the summary and the curves."""
    mi, ni = balanced_sample(len(inputs.members), len(inputs.nonmembers), max_per_side, seed)
    texts = [inputs.members[i] for i in mi] + [inputs.nonmembers[i] for i in ni]
    targets = np.concatenate([inputs.member_targets[mi], inputs.nonmember_targets[ni]])
    is_member = np.concatenate([np.ones(len(mi), dtype=np.int64), np.zeros(len(ni), dtype=np.int64)])
    proba = model.predict_proba(texts, component=component)
    ref = None if reference is None else reference_probabilities(reference, model.labels, texts)
    scores = attack_scores(proba, targets, is_member, reference_proba=ref, seed=seed)
    attacks = {name: evaluate_attack(name, is_member, s, seed=seed) for name, s in scores.items()}
    loss = losses(proba, targets)
    right = proba.argmax(axis=1) == targets
    summary = {
        "members": int(len(mi)),
        "nonmembers": int(len(ni)),
        "member_accuracy": round(float(right[is_member == 1].mean()), 4),
        "nonmember_accuracy": round(float(right[is_member == 0].mean()), 4),
        "member_mean_loss": round(float(loss[is_member == 1].mean()), 4),
        "nonmember_mean_loss": round(float(loss[is_member == 0].mean()), 4),
        "attacks": {name: a.to_json() for name, a in attacks.items()},
        "strongest": max(attacks, key=lambda n: attacks[n].auc),
    }
    return summary, attacks


def reference_probabilities(reference: Bundle, labels: list[str], texts: list[str]) -> np.ndarray:
    """The reference model's probabilities in the audited model's label order (same label set required)."""
    if set(reference.labels) != set(labels):
        raise ConfigError(f"the reference bundle {reference.path} has other labels than the audited bundle")
    order = [reference.labels.index(lab) for lab in labels]
    return reference.predict_proba(texts)[:, order]


def canary_exposure(
    model: Bundle, spec: CanarySpec, *, component: str | None = None, candidates: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Exposure of each planted canary, ranked among ``candidates`` secrets sampled from the candidate space.

    One sample serves every canary (they share the template): its texts are scored once and each
    canary reads its own label's loss, so 10 canaries cost one pass over the sample, not ten.
    """
    unknown = sorted({c.label for c in spec.canaries} - set(model.labels))
    if unknown:
        raise ConfigError(f"canary labels unknown to the bundle: {', '.join(unknown[:5])}")
    started = time.perf_counter()
    secrets = {c.secret for c in spec.canaries}
    rng = np.random.default_rng(seed + 1)
    sample = [s for s in random_secrets(rng, candidates + len(secrets), spec.alphabet, spec.length) if s not in secrets]
    sample = sample[:candidates]
    cand_proba = model.predict_proba([spec.text(s) for s in sample], component=component)
    true_proba = model.predict_proba([spec.text(c.secret) for c in spec.canaries], component=component)
    rows: list[dict[str, Any]] = []
    by_reps: dict[int, list[float]] = defaultdict(list)
    for i, c in enumerate(spec.canaries):
        k = model.labels.index(c.label)
        cand_loss = losses(cand_proba, np.full(len(sample), k))
        e = exposure(float(losses(true_proba[i : i + 1], [k])[0]), cand_loss, spec.candidate_space)
        by_reps[c.repetitions].append(e.exposure)
        rows.append({"secret": c.secret, "label": c.label, "repetitions": c.repetitions,
                     "exposure": round(e.exposure, 3), "rank_in_sample": e.rank_in_sample,
                     "estimated_rank": round(e.rank, 1), "loss": round(e.loss, 4)})  # fmt: skip
    values = [float(r["exposure"]) for r in rows]
    return {
        "template": spec.template,
        "candidate_space": spec.candidate_space,
        "sampled_candidates": len(sample),
        "exposure_ceiling": round(math.log2(len(sample) + 1), 3),
        "estimate": "rank of the true secret's loss among a uniform sample of candidate secrets, scaled to the space",
        "mean_exposure": round(float(np.mean(values)), 3),
        "max_exposure": round(float(np.max(values)), 3),
        "by_repetitions": {str(k): round(float(np.mean(v)), 3) for k, v in sorted(by_reps.items())},
        "canaries": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def privacy_record(bundle: Path) -> dict[str, Any] | None:
    """The bundle's differential-privacy record (manifest ``privacy``), read defensively: None if absent."""
    try:
        data = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = data.get("privacy") if isinstance(data, dict) else None
    return record if isinstance(record, dict) else None


def audit(
    model: Bundle,
    inputs: AuditInputs,
    *,
    spec: CanarySpec | None = None,
    component: str | None = None,
    reference: Bundle | None = None,
    max_per_side: int = 2000,
    candidates: int = 10_000,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, AttackResult]]:
    """The whole audit as a report dict (JSON-ready) and the attacks' ROC curves."""
    started = time.perf_counter()
    component = component or model.default_component
    summary, curves = membership(
        model, inputs, component=component, reference=reference, max_per_side=max_per_side, seed=seed
    )
    log.info("membership inference: loss-attack AUC %.4f", summary["attacks"]["loss"]["auc"])
    report: dict[str, Any] = {
        "bundle": str(model.path),
        "component": component,
        "backend": model.backend,
        "privacy": privacy_record(model.path),
        "membership": summary,
        "dropped": inputs.dropped,
        "reference": None if reference is None else str(reference.path),
        "seed": seed,
    }
    if spec is not None:
        report["canaries"] = canary_exposure(model, spec, component=component, candidates=candidates, seed=seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report, curves
